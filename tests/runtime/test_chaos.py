"""The chaos run: a real appliance under N random faults, then the journal audit.

Only with ``--chaos N`` (skipped otherwise: it runs for minutes to an hour). A real
``dynamind run`` (block wait strategy, paper venue, synthetic feed, the harness's small
config) takes N faults, one at a time, each drawn at random:

- ``kill``: SIGKILL a random worker (feed, an agent host, execution);
- ``stop``: SIGSTOP a random worker and leave it frozen until the supervisor, having missed
  its heartbeats, kills and restarts it (then SIGCONT, in case it is still there);
- ``supervisor``: SIGKILL the supervisor (its workers get the parent-death SIGTERM) and
  start a new ``dynamind run`` on the same config and journal at once.

Then a clean stop and the audit over every lifetime (epoch) the journal holds: every
published intent exactly once (executed, rejected with a reason, or journaled as
STALE_AFTER_CRASH), positions equal fills, nothing of the instance left in /dev/shm and no
process of any lifetime left running. The figures go to stdout as one ``chaos:`` line
(run with ``-s`` to see it), with a progress line every PROGRESS_EVERY faults.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from appliance.model.orders import OrderState
from tests.harness import (
    Appliance,
    JournalAudit,
    assert_hosts_agree,
    assert_positions_equal_fills,
    audit_journal,
)

WORKERS = ("feed", "host-a", "host-b", "execution")
HEARTBEAT_TIMEOUT_S = 1.5
# Chances of a fault's kind; the rest are worker kills.
P_SUPERVISOR = 0.03
P_STOP = 0.12
# A random pause after each fault, so faults land at every point of a worker's life
# (starting, recovering, busy); the waits for a worker to be back set the real pace.
PAUSE_S = (0.05, 0.6)
# A bound on waiting for a worker or the appliance to be back, not a pace.
BACK_TIMEOUT_S = 120.0
PROGRESS_EVERY = 50


@pytest.fixture
def chaos_faults(request: pytest.FixtureRequest) -> int:
    n = request.config.getoption("--chaos")
    if n <= 0:
        pytest.skip("the chaos run needs --chaos N")
    return n


class Chaos:
    """Injects the faults into one appliance and keeps count of what it did."""

    def __init__(self, app: Appliance, rng: random.Random) -> None:
        self.app = app
        self.rng = rng
        self.faults: Counter[str] = Counter()
        self.lifetimes = 0
        self.seen: dict[int, psutil.Process] = {}  # every process of every lifetime
        self._last: dict[str, int] = {}  # worker -> incarnation last faulted

    # -- lifetimes --------------------------------------------------------------------

    def start(self) -> None:
        self.lifetimes += 1
        self.app.log_path = self.app.dir / f"run{self.lifetimes}.log"
        self.app.start().wait_ready()
        self._last = {}  # a new stats segment: incarnations count from 1 again
        self._observe()

    def _observe(self) -> None:
        """Remember the supervisor and all its descendants (workers, helpers)."""
        with contextlib.suppress(psutil.Error):
            sup = psutil.Process(self.app.proc.pid)
            for p in [sup, *sup.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)

    def leftover_processes(self) -> list[str]:
        out = []
        for p in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{p.pid} {p.cmdline()[-3:]}")
        return out

    # -- faults -----------------------------------------------------------------------

    def fault(self) -> None:
        r = self.rng.random()
        if r < P_SUPERVISOR:
            self.kill_supervisor()
        elif r < P_SUPERVISOR + P_STOP:
            self.stop_worker(self.rng.choice(WORKERS))
        else:
            self.kill_worker(self.rng.choice(WORKERS))
        time.sleep(self.rng.uniform(*PAUSE_S))

    def _fresh(self, name: str) -> dict:
        """The worker's slot once it runs in an incarnation not faulted yet (a SIGKILLed
        worker's slot says alive and running until the process is gone)."""
        found: dict = {}

        def ready() -> bool:
            w = self.app.workers()[name]
            found.update(w)
            return (
                w["alive"] and w["state"] == "running" and w["incarnation"] != self._last.get(name)
            )

        self.app.wait_for(ready, BACK_TIMEOUT_S, f"{name} back for the next fault")
        self._observe()
        self._last[name] = found["incarnation"]
        return found

    def kill_worker(self, name: str) -> None:
        while True:
            try:
                os.kill(self._fresh(name)["pid"], signal.SIGKILL)
                break
            except ProcessLookupError:
                # Gone between the look and the kill (a loaded machine: the supervisor's
                # heartbeat check took it first; a crash shows as a traceback in the logs,
                # checked at the end): kill its next incarnation instead.
                continue
        self.faults[f"kill {name}"] += 1

    def stop_worker(self, name: str) -> None:
        w = self._fresh(name)
        os.kill(w["pid"], signal.SIGSTOP)
        self.faults[f"stop {name}"] += 1
        # Frozen, it beats no more: only the supervisor's heartbeat check brings it back.
        self.app.wait_for(
            lambda: self.app.workers()[name]["incarnation"] > w["incarnation"],
            BACK_TIMEOUT_S,
            f"the supervisor to replace frozen {name}",
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(w["pid"], signal.SIGCONT)

    def kill_supervisor(self) -> None:
        self._observe()
        self.app.crash()
        self.faults["kill supervisor"] += 1
        # At once, as a service manager would: the new start waits for the orphans itself.
        self.start()

    def settle(self) -> None:
        """Every worker running again, before the clean stop."""
        for name in WORKERS:
            self.app.wait_for(
                lambda n=name: (w := self.app.workers()[n])["alive"] and w["state"] == "running",
                BACK_TIMEOUT_S,
                f"{name} running before the stop",
            )
        self._observe()


def heartbeat_kills(directory: Path) -> int:
    return sum(p.read_text().count("missed heartbeats") for p in directory.glob("run*.log"))


def summary(chaos: Chaos, audit: JournalAudit, fills: int, wall: float, n: int) -> str:
    by_kind = Counter()
    for k, v in chaos.faults.items():
        by_kind["supervisor" if k == "kill supervisor" else k.split()[0]] += v
    executed = sum(v for k, v in audit.states.items() if k != OrderState.REJECTED.name)
    load = "/".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"chaos: N={n} faults {dict(by_kind)} ({dict(sorted(chaos.faults.items()))}); "
        f"supervisor restarts {chaos.lifetimes - 1}; heartbeat kills "
        f"{heartbeat_kills(chaos.app.dir)} ({by_kind['stop']} of workers the test froze); "
        f"intents published {audit.published} journaled "
        f"{audit.journaled} (states {audit.states}) executed {executed} rejected "
        f"{audit.states.get(OrderState.REJECTED.name, 0)} (reasons {audit.rejects}) stale "
        f"{audit.stale}; fills {fills}; epochs {len(audit.heads)}; wall {wall:.0f}s; "
        f"load {load} on {os.cpu_count()} cpus"
    )


@pytest.mark.timeout(0)  # every wait in it is bounded; the whole takes minutes to an hour
def test_chaos_run(tmp_path, chaos_faults):
    rng_seed = int.from_bytes(os.urandom(4), "little")
    print(f"\nchaos: seed {rng_seed}", flush=True)
    app = Appliance(
        tmp_path, rate=1000, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S, max_restarts=100_000
    )
    chaos = Chaos(app, random.Random(rng_seed))
    began = time.monotonic()
    try:
        chaos.start()
        for i in range(1, chaos_faults + 1):
            chaos.fault()
            if i % PROGRESS_EVERY == 0:
                print(
                    f"chaos: {i} faults after {time.monotonic() - began:.0f}s: "
                    f"{dict(sorted(chaos.faults.items()))}, lifetimes {chaos.lifetimes}",
                    flush=True,
                )
        chaos.settle()
        assert app.stop() == 0, app.log_tail()
    finally:
        app.kill_all()
    wall = time.monotonic() - began
    with app.journal() as db:
        audit = audit_journal(db)  # every intent of every lifetime exactly once
        fills = db.execute("SELECT count(*) FROM fills").fetchone()[0]
        # each order's filled quantity is the sum of its fills
        off = db.execute(
            "SELECT count(*) FROM orders o WHERE abs(o.filled_qty - coalesce((SELECT "
            "sum(f.qty) FROM fills f WHERE f.client_order_id = o.client_order_id), 0)) > 1e-9"
        ).fetchone()[0]
    print(summary(chaos, audit, fills, wall, chaos_faults), flush=True)
    assert len(audit.heads) == chaos.lifetimes and audit.clean_stops == 1
    assert audit.published > 0 and off == 0
    assert_positions_equal_fills(app)
    assert_hosts_agree(app)
    assert app.leftovers() == [], "segments left in /dev/shm"
    assert chaos.leftover_processes() == [], "processes left running"
    assert "Traceback" not in "".join(p.read_text() for p in tmp_path.glob("run*.log"))

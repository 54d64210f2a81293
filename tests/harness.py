"""Run a real appliance (`dynamind run` in a subprocess) and inspect what it left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from appliance.model.orders import OrderState
from appliance.model.records import RejectReason
from appliance.shm import Stats, list_names, remove_instance
from appliance.shm.segment import SegmentError
from appliance.trading.flatten import FLATTEN_SEQ
from appliance.workers import segments

TEST_CONFIG = """
instance = "{instance}"
journal_path = "{dir}/journal.sqlite"
venue_state_path = "{dir}/venue.sqlite"
log_format = "json"
status_interval_s = 0.5
wait = "block"
ring_capacity = 16384
queue_capacity = 4096

[supervisor]
heartbeat_timeout_s = {heartbeat_timeout_s}
restart_backoff_initial_s = 0.1
restart_backoff_max_s = 0.5
max_restarts = {max_restarts}
restart_window_s = 60.0

[[symbols]]
name = "BTC/USDT"
start_price = 65000.0
tick_size = 0.01
lot_size = 0.00001
max_position = 0.02
max_order_notional = 5000.0

[[symbols]]
name = "ETH/USDT"
start_price = 3400.0
tick_size = 0.01
lot_size = 0.0001
max_position = 0.4
max_order_notional = 5000.0

[feed]
kind = "{feed_kind}"
rate = {rate}
batch_size = 128
seed = 7
{feed_extra}

[[hosts]]
name = "host-a"
[[hosts.populations]]
kind = "ema_cross"
agents = 60
[hosts.populations.params]
fast = [3, 8]
slow = [10, 30]
qty = [0.002, 0.04]
reject_backoff_s = 0.2

[[hosts]]
name = "host-b"
[[hosts.populations]]
kind = "ema_cross"
agents = 40
[hosts.populations.params]
fast = [3, 8]
slow = [10, 30]
qty = [0.002, 0.04]

{extra}
"""


# A second population for host-b (the last [[hosts]] of TEST_CONFIG), as ``extra``: market
# makers quoting both symbols around the mid, requoting when it moves a fraction of a bp.
MARKET_MAKERS = """
[[hosts.populations]]
kind = "market_making"
agents = 20
[hosts.populations.params]
qty = [0.001, 0.01]
half_spread_bps = [0.5, 1.5]
skew_bps = 1.0
requote_bps = [0.5, 1.0]
"""


def dynamind(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the `dynamind` command line as an operator would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "appliance.ops.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


# A worker's loop can starve for seconds on a loaded 2-core machine: a shorter bound would
# restart workers the tests count. The stall tests set their own.
HEARTBEAT_TIMEOUT_S = 20.0


def write_config(directory: Path, **overrides: Any) -> tuple[Path, str]:
    instance = f"t{os.getpid()}x{uuid.uuid4().hex[:6]}"
    values = {
        "instance": instance,
        "dir": directory,
        "rate": 4000,
        "max_restarts": 100,
        "heartbeat_timeout_s": HEARTBEAT_TIMEOUT_S,
        "feed_kind": "synthetic",
        "feed_extra": "",
        "extra": "",
    }
    values.update(overrides)
    path = directory / "dynamind.toml"
    path.write_text(TEST_CONFIG.format(**values))
    return path, values["instance"]


class Appliance:
    """A `dynamind run` subprocess with JSON logs captured to a file."""

    def __init__(self, directory: Path, **overrides: Any) -> None:
        self.dir = directory
        self.config, self.instance = write_config(directory, **overrides)
        self.log_path = directory / "appliance.log"
        self.journal_path = directory / "journal.sqlite"  # as the config says
        self.proc: subprocess.Popen | None = None
        self._stats: Stats | None = None

    def start(self, *args: str, env: dict[str, str] | None = None) -> Appliance:
        """``dynamind run`` with ``args``; ``env`` adds to the environment (e.g. systemd's).
        A restarted instance adds to its log; wait_ready looks for a new ready line."""
        self._readies = self._ready_lines()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.ops.cli", "run", "--config", str(self.config), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=None if env is None else {**os.environ, **env},
        )
        return self

    # -- observing -----------------------------------------------------------------------

    def stats(self) -> Stats:
        if self._stats is None:
            self._stats = Stats.attach(self.instance, "stats")
        return self._stats

    def workers(self) -> dict[str, dict]:
        return {s["name"]: s for s in self.stats().snapshot()}

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"appliance exited with {self.proc.returncode} while waiting for {what}:\n"
                    + self.log_tail()
                )
            try:
                if predicate():
                    return
            except SegmentError:
                pass  # not created yet
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> None:
        """Wait until the appliance's log contains ``text`` (the appliance may be exiting)."""
        deadline = time.monotonic() + timeout
        while text not in self.log_path.read_text():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {text!r} in the log:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _ready_lines(self) -> int:
        return self.log_path.read_text().count("ready:") if self.log_path.exists() else 0

    def wait_ready(self, timeout: float = 60.0) -> None:
        self.wait_for(lambda: self._ready_lines() > self._readies, timeout, what="ready")

    def counter(self, name: str, counter: str) -> int:
        return self.workers()[name]["counters"][counter]

    def kill(self, name: str) -> int:
        """SIGKILL worker ``name``; returns the pid killed."""
        pid = self.workers()[name]["pid"]
        os.kill(pid, signal.SIGKILL)
        return pid

    def wait_restarted(self, name: str, incarnation: int, timeout: float = 60.0) -> None:
        self.wait_for(
            lambda: (
                (w := self.workers()[name])["incarnation"] >= incarnation
                and w["alive"]
                and w["state"] == "running"
            ),
            timeout,
            what=f"{name} incarnation {incarnation}",
        )

    # -- stopping ------------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120.0) -> int:
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._log.close()
        return code

    def crash(self) -> list[int]:
        """SIGKILL the supervisor (its workers get the kernel's parent-death SIGTERM and are
        left to it); returns the pids of the workers it had."""
        pids = [w["pid"] for n, w in self.workers().items() if n != "supervisor"]
        self._stats.close()
        self._stats = None
        self.proc.kill()
        self.proc.wait(30)
        self._log.close()
        return pids

    def kill_all(self) -> bool:
        """Test cleanup: nothing of this appliance may outlive the test.

        Returns True when the supervisor had to be killed; its workers are then waited
        for and the segments it could not unlink are removed.
        """
        if self._stats is not None:
            pids = [w["pid"] for w in self.workers().values()]
            self._stats.close()
            self._stats = None
        else:
            pids = []
        if self.proc is None or self.proc.poll() is not None:
            return False
        self.proc.kill()
        self.proc.wait(30)
        psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 30)
        remove_instance(self.instance)
        return True

    # -- what it left ----------------------------------------------------------------------

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-n:])

    def leftovers(self) -> list[str]:
        return list_names(self.instance)

    def journal(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.journal_path}?mode=ro", uri=True)


def queued_intents(app: Appliance, hosts: int = 2) -> int:
    """Intents published and not yet taken by execution, over every host's queue."""
    return segments.queued_intents(app.instance, range(hosts))


def freeze_execution_with_intents_queued(app: Appliance, attempts: int = 10) -> int:
    """SIGSTOP execution with intents queued behind it; its pid.

    Each agent queues at most one intent and then waits for its report: frozen at a moment
    when every agent waits on an intent execution has already taken, nothing ever queues.
    Then it is let go until it has taken more and frozen again (bounded tries, no pace)."""
    pid = app.workers()["execution"]["pid"]
    for _ in range(attempts):
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if queued_intents(app) > 0:
                return pid
            time.sleep(0.05)
        taken = app.counter("execution", "intents")
        os.kill(pid, signal.SIGCONT)
        app.wait_for(
            lambda taken=taken: app.counter("execution", "intents") > taken, what="execution taking"
        )
    raise AssertionError(f"no intent queued behind a frozen execution in {attempts} tries")


def assert_intents_accounted(app: Appliance) -> dict[int, int]:
    """Every published intent is in the journal exactly once, in a legal end state.

    Published intents are queue positions 0..head-1 per host; execution records the heads
    it drained at a clean stop. Returns the heads.
    """
    with app.journal() as db:
        epochs = {e for (e,) in db.execute("SELECT DISTINCT epoch FROM runs")}
        assert len(epochs) == 1, f"one appliance lifetime expected, journal has {epochs}"
        return audit_journal(db).heads[epochs.pop()]


@dataclass
class JournalAudit:
    """What the journal says about every appliance lifetime (epoch) it holds."""

    heads: dict[str, dict[int, int]]  # per epoch, per host: intents published
    states: dict[str, int]  # journaled intents by end state
    rejects: dict[str, int]  # rejected intents by reason
    clean_stops: int  # epochs whose heads execution recorded at a clean stop

    @property
    def published(self) -> int:
        return sum(sum(h.values()) for h in self.heads.values())

    @property
    def journaled(self) -> int:
        return sum(self.states.values())

    @property
    def stale(self) -> int:
        return self.rejects.get(RejectReason.STALE_AFTER_CRASH.name, 0)


def audit_journal(db: sqlite3.Connection) -> JournalAudit:
    """Every intent published in every epoch is in the journal exactly once, rejected ones
    with a reason; the figures. An epoch's published count is its intent queues' heads as
    recorded by a clean stop (execution's drain) or, after a crash, by the next start
    (which journaled what was left queued as STALE_AFTER_CRASH)."""
    heads: dict[str, dict[int, int]] = {}
    clean = 0
    for (epoch,) in db.execute("SELECT DISTINCT epoch FROM runs").fetchall():
        row = db.execute(
            "SELECT drained, stopped_ns FROM runs WHERE epoch = ? AND drained IS NOT NULL "
            "ORDER BY run_id DESC LIMIT 1",
            (epoch,),
        ).fetchone()
        assert row is not None, f"epoch {epoch}: no record of its intent queues' heads"
        heads[epoch] = {int(h): n for h, n in json.loads(row[0]).items()}
        clean += row[1] is not None
        for host, head in heads[epoch].items():
            # Seqs from FLATTEN_SEQ up are the operator's closing orders, not queue positions.
            seqs = [
                s
                for (s,) in db.execute(
                    "SELECT intent_seq FROM orders WHERE epoch = ? AND host = ? "
                    "AND intent_seq < ? ORDER BY intent_seq",
                    (epoch, host, FLATTEN_SEQ),
                )
            ]
            assert len(seqs) == len(set(seqs)), f"host {host}: an intent journaled twice"
            assert seqs == list(range(head)), (
                f"epoch {epoch} host {host}: journal has {len(seqs)} intents, published "
                f"{head}; missing {sorted(set(range(head)) - set(seqs))[:10]}, "
                f"extra {sorted(set(seqs) - set(range(head)))[:10]}"
            )
    bad = db.execute(
        "SELECT count(*) FROM orders WHERE state = ? AND (reason = ? OR reason_text = '')",
        (OrderState.REJECTED, RejectReason.NONE),
    ).fetchone()[0]
    assert bad == 0, f"{bad} rejected intents without a reason"
    stale_filled = db.execute(
        "SELECT count(*) FROM orders WHERE reason = ? AND (state != ? OR filled_qty != 0)",
        (RejectReason.STALE_AFTER_CRASH, OrderState.REJECTED),
    ).fetchone()[0]
    assert stale_filled == 0, f"{stale_filled} stale intents were executed"
    where = "WHERE intent_seq < ?"
    states = {
        OrderState(s).name: n
        for s, n in db.execute(
            f"SELECT state, count(*) FROM orders {where} GROUP BY state", (FLATTEN_SEQ,)
        )
    }
    rejects = {
        RejectReason(r).name: n
        for r, n in db.execute(
            f"SELECT reason, count(*) FROM orders {where} AND state = ? GROUP BY reason",
            (FLATTEN_SEQ, OrderState.REJECTED),
        )
    }
    return JournalAudit(heads, states, rejects, clean)


def final_report(app: Appliance) -> dict:
    finals = [line for line in app.log_lines() if line["msg"].startswith("final positions")]
    assert finals, "execution sent no final report:\n" + app.log_tail()
    return finals[-1]


def journal_positions(app: Appliance) -> dict[tuple[int, int, int, int], float]:
    from appliance.trading.journal import Journal

    j = Journal(app.journal_path, readonly=True)
    try:
        return j.reads.positions_from_fills()
    finally:
        j.close()


def assert_hosts_agree(app: Appliance) -> None:
    """At the clean stop every agent host compared its agents' positions with execution's."""
    lines = [line["msg"] for line in app.log_lines() if "positions check" in line["msg"]]
    assert "DIFFER" not in " ".join(lines), lines
    for host in ("host-a", "host-b"):
        mine = [m for m in lines if m.startswith(f"{host} positions check")]
        assert mine, f"{host} made no positions check:\n{app.log_tail()}"
        assert "did not settle" not in mine[-1] and " 0 settled" not in mine[-1], mine[-1]


def assert_positions_equal_fills(app: Appliance) -> dict:
    """The positions execution held at its clean stop (final report) equal the positions
    recomputed from the journal's fills; the final report."""
    final = final_report(app)
    assert "DIFFERS" not in final["msg"], final["msg"]
    held = {tuple(p[:4]): p[4] for p in final["positions"]}
    fills = journal_positions(app)
    assert set(held) == {k for k, v in fills.items() if v}
    for key, qty in held.items():
        assert abs(qty - fills[key]) <= 1e-9, (key, qty, fills[key])
    return final


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting every message, with arrival times."""

    def __init__(self, path: Path | str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path).replace("@", "\0", 1))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def received(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, pred, timeout: float = 60.0, after: float = 0.0) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, msg in self.received():
                if t >= after and pred(msg):
                    return t, msg
            time.sleep(0.05)
        raise AssertionError(f"no such message; got {[m for _, m in self.received()][-10:]}")

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()

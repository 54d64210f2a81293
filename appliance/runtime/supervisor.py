"""The supervisor: owns the segments, runs the workers, restarts them, stops them in order.

It is the process systemd starts (Type=notify). It creates every shared-memory segment
(so queued intents outlive any worker), spawns the workers with the spawn start method,
pins them, and watches exit codes and heartbeats. A worker that dies or stops beating is
restarted with exponential backoff; too many restarts in a window halt the appliance with
a non-zero exit so the service manager can act. SIGTERM/SIGINT stop it in order: intake
first, then execution drains the intent queues and flushes the journal, then the rest.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import Config, ConfigError, diff_config, load_config
from appliance.model.enums import Role
from appliance.model.records import INTENT, POSITION, REPORT, TICK
from appliance.runtime import layout
from appliance.runtime.control import Channel
from appliance.runtime.cpu import CpuPlan, plan
from appliance.runtime.exits import Exit
from appliance.runtime.service import ServiceReport, pnl_net, stale_workers
from appliance.runtime.worker import WorkerSpec, run
from appliance.shm import BroadcastRing, RecordQueue, Stats, require_tso
from appliance.shm.segment import reclaim_stale
from appliance.shm.snapshot import SharedSnapshot
from appliance.shm.stats import SlotState
from appliance.trading.layout_check import LayoutMismatch, layout_problems

log = logging.getLogger(__name__)

LOOP_S = 0.05
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 60.0
DRAIN_ATTEMPTS = 3
STABLE_S = 10.0  # a worker up this long has its backoff reset


class Halted(RuntimeError):
    """The restart-intensity limit was exceeded."""


@dataclass
class Child:
    process: layout.Process
    cores: list[int]
    proc: mp.process.BaseProcess | None = None
    down: Channel | None = None
    up: Channel | None = None
    incarnation: int = 0
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float | None = None
    ready: bool = False
    exits: list[int | None] = field(default_factory=list)
    restarts: deque[float] = field(default_factory=deque)  # times, within the window

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()


class Supervisor:
    def __init__(self, config: Config, config_path: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.ctx = mp.get_context("spawn")
        # sd_notify, the board segment and status lines: see service.py
        self.service = ServiceReport()
        self.children: dict[str, Child] = {}
        self.segments: list[Any] = []
        self.cpu: CpuPlan | None = None
        self.stats: Stats | None = None
        self.ring: BroadcastRing | None = None
        self.queues: list[tuple[RecordQueue, RecordQueue]] = []
        self._stop_requested = False
        self._reload_requested = False
        self._flatten_requested = False
        self.halted = False
        self.last_status: dict[str, dict[str, Any]] = {}
        self.final: dict[str, Any] | None = None  # execution's report at a clean stop
        self._rates: dict[str, tuple[float, int]] = {}

    # -- segments ------------------------------------------------------------------------

    def create_segments(self) -> None:
        cfg = self.config
        require_tso()
        # The stats segment doubles as the instance lock: a live owner means a running
        # appliance of the same name, which we refuse; a dead one is reclaimed.
        group = cfg.operator_group  # may read every segment (status, top)
        self.stats = Stats.create(
            cfg.instance, layout.STATS, layout.stats_slots(cfg), layout.COUNTERS, group
        )
        self.segments.append(self.stats)
        for name in reclaim_stale(cfg.instance):
            log.warning("reclaimed stale %s", name)
        self.segments.append(self.service.open_board(cfg.instance, cfg.trading.state, group))
        self.ring = BroadcastRing.create(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity, group)
        self.segments.append(self.ring)
        for h in layout.queue_hosts(cfg):
            # Each segment is recorded as soon as it exists, so a failure part-way
            # through still unlinks everything made before it.
            iq = RecordQueue.create(
                cfg.instance, layout.intents_queue(h), INTENT, cfg.queue_capacity, group
            )
            self.segments.append(iq)
            rq = RecordQueue.create(
                cfg.instance, layout.reports_queue(h), REPORT, cfg.queue_capacity, group
            )
            self.segments.append(rq)
            self.queues.append((iq, rq))
            self.segments.append(
                SharedSnapshot.create(
                    cfg.instance,
                    layout.positions_snapshot(h),
                    POSITION,
                    (layout.host_agents(cfg, h), len(cfg.symbols)),
                    group,
                )
            )

    def destroy_segments(self) -> None:
        for seg in reversed(self.segments):
            with contextlib.suppress(Exception):
                seg.destroy()
        self.segments.clear()

    # -- children ------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        child.incarnation += 1
        child.down, child.up = Channel(), Channel()  # fresh per incarnation: see control.py
        spec = WorkerSpec(
            process=child.process,
            config=self.config,
            cores=child.cores,
            strategy=self.cpu.strategy,
            incarnation=child.incarnation,
            supervisor_pid=os.getpid(),
        )
        proc = self.ctx.Process(
            target=run, args=(spec, child.down, child.up), name=child.process.name, daemon=False
        )
        proc.start()
        child.proc = proc
        child.started = time.monotonic()
        child.restart_at = None
        child.ready = False
        log.info(
            "started %s pid=%d cores=%s incarnation=%d",
            child.process.name,
            proc.pid,
            child.cores,
            child.incarnation,
        )

    def _wait_ready(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.children[n].ready for n in names):
            if self._stop_requested:
                return  # stop now; run() stops whatever did start
            self._my_slot.beat()  # starting is not hanging (status and top show the beat)
            self._pump_events()
            for n in names:
                c = self.children[n]
                if not c.alive and not c.ready:
                    raise RuntimeError(
                        f"{n} exited with code {c.proc.exitcode} before it was ready"
                    )
            if time.monotonic() > deadline:
                late = [n for n in names if not self.children[n].ready]
                raise RuntimeError(f"workers not ready after {timeout:.0f}s: {late}")
            time.sleep(0.01)

    def check_journal(self) -> None:
        """Refuse to start when the config contradicts positions open in the journal."""
        cfg = self.config
        if not cfg.runs_execution:
            return  # an agents instance of a cluster keeps no journal
        problems = layout_problems(
            cfg.journal_path,
            cfg.symbol_names,
            [s.lot_size for s in cfg.symbols],
            {
                (h, p): pop.agents
                for h, host in enumerate(cfg.hosts)
                for p, pop in enumerate(host.populations)
            },
        )
        if problems:
            raise LayoutMismatch(cfg.journal_path, problems)

    def start(self) -> None:
        cfg = self.config
        self.check_journal()
        # Workers are pinned to one core each: a BLAS thread pool inside one would only
        # fight its own process for that core. Children read these at numpy import.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        procs = layout.processes(cfg)
        self.cpu = plan([p.name for p in procs], cfg.cpu.mode, cfg.cpu.cores, cfg.wait)
        log.info("cpu layout: %s", self.cpu.note)
        if self.cpu.shared and cfg.wait == "auto":
            log.info("fewer cores than processes: every hot loop uses the block strategy")
        self.create_segments()
        self._my_slot = self.stats.slot(layout.SUPERVISOR_SLOT, "supervisor", "supervisor")
        self._my_slot.state(SlotState.RUNNING)
        for p in procs:
            self.children[p.name] = Child(p, self.cpu.cores[p.name])
        # Readers first, so the feed's first tick already has everyone registered.
        readers = [p.name for p in procs if p.role != Role.FEED]
        for n in readers:
            self._spawn(self.children[n])
        self._wait_ready(readers, READY_TIMEOUT_S)
        if self._stop_requested:
            return
        self._spawn(self.children[Role.FEED])
        self._wait_ready([Role.FEED], READY_TIMEOUT_S)
        if self._stop_requested:
            return
        self.service.ready(len(procs))
        log.info("appliance %s ready: %d workers", cfg.instance, len(procs))

    # -- the watch loop ------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        elif signum == signal.SIGUSR1:
            self._flatten_requested = True  # `dynamind flatten`
        else:
            self._stop_requested = True

    def install_signals(self) -> None:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(s, self._on_signal)

    def run(self, duration: float | None = None) -> int:
        """Start, watch until stopped (signal or ``duration``), stop in order."""
        self.install_signals()
        code = 0
        try:
            self.start()
            code = self.watch(duration)
        except Halted as exc:
            log.critical("halting: %s", exc)
            self.service.halting(str(exc))
            code = Exit.HALTED
        finally:
            if self.stop() and code == 0:
                code = Exit.UNDRAINED
        return code

    def watch(self, duration: float | None) -> int:
        cfg = self.config
        t0 = time.monotonic()
        next_status = t0 + cfg.status_interval_s
        while not self._stop_requested:
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                log.info("duration of %.1fs reached; stopping", duration)
                break
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            if self._flatten_requested:
                self._flatten_requested = False
                self.flatten()
            self._pump_events()
            self._check_children(now)
            self._my_slot.beat()
            if now >= next_status:
                next_status = now + self.config.status_interval_s
                self.status_line()
            self._watchdog(now)
            time.sleep(LOOP_S)
        return 0

    def _watchdog(self, now: float) -> None:
        interval = self.service.notifier.watchdog_interval
        if interval is None:
            return
        ready = [(n, c.process.stats_slot) for n, c in self.children.items() if c.ready and c.alive]
        stale = stale_workers(ready, self.stats.slots["heartbeat_ns"], int(interval * 1e9))
        self.service.watchdog(now, stale)

    def _pump_events(self) -> None:
        for child in self.children.values():
            if child.up is None or _killed(child):
                continue
            for msg in child.up.receive():
                kind = msg.get("kind")
                if kind == "ready":
                    child.ready = True
                elif kind == "status":
                    self.last_status[child.process.name] = msg
                elif kind == "error":
                    log.error("%s reported: %s", child.process.name, msg.get("error"))
                elif kind == "positions_check":
                    differ = msg.get("differ", [])
                    if differ:
                        log.error(
                            "%s positions check: agents DIFFER from execution "
                            "([population, agent, host's, execution's]): %s",
                            child.process.name,
                            differ,
                        )
                    else:
                        log.info(
                            "%s positions check: %d settled agents agree with execution%s",
                            child.process.name,
                            msg.get("checked", 0),
                            f" ({msg['skipped']})" if msg.get("skipped") else "",
                        )
                elif kind == "final":
                    self.final = msg
                    log.info(
                        "final positions: %d non-flat, journal %s, reported to hosts %s",
                        len(msg["positions"]),
                        "agrees" if msg["journal_matches"] else "DIFFERS",
                        "agrees" if msg["reported_matches"] else "DIFFERS",
                        extra={"positions": msg["positions"]},
                    )
                else:
                    log.info("%s: %s", child.process.name, msg)

    def _check_children(self, now: float) -> None:
        cfg = self.config.supervisor
        heartbeat_ns = int(cfg.heartbeat_timeout_s * 1e9)
        slots = self.stats.slots
        for child in self.children.values():
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._spawn(child)
                continue
            if child.alive:
                beat = int(slots[child.process.stats_slot]["heartbeat_ns"])
                # Before it is ready a worker may be busy recovering (execution replays its
                # journal): it gets READY_TIMEOUT_S for that, heartbeats only after.
                if child.ready:
                    age = time.monotonic_ns() - beat
                    stalled = age > heartbeat_ns
                    why = f"missed heartbeats for {age / 1e9:.1f}s"
                else:
                    stalled = now - child.started > READY_TIMEOUT_S
                    why = f"not ready after {READY_TIMEOUT_S:.0f}s"
                if not stalled:
                    continue
                log.error("%s (pid %d) %s; killing it", child.process.name, child.proc.pid, why)
                child.proc.kill()
                child.proc.join(5)
            self._schedule_restart(child, now)

    def _schedule_restart(self, child: Child, now: float) -> None:
        cfg = self.config.supervisor
        code = child.proc.exitcode
        child.exits.append(code)
        recent = child.restarts
        recent.append(now)
        while recent and now - recent[0] > cfg.restart_window_s:
            recent.popleft()
        if len(recent) > cfg.max_restarts:
            self.halted = True
            raise Halted(
                f"{len(recent)} restarts within {cfg.restart_window_s:.0f}s of "
                f"{child.process.name} (limit {cfg.max_restarts}); it last exited with {code}"
            )
        if now - child.started > STABLE_S:
            child.backoff = 0.0
        child.backoff = (
            cfg.restart_backoff_initial_s
            if child.backoff == 0
            else min(child.backoff * 2, cfg.restart_backoff_max_s)
        )
        child.restart_at = now + child.backoff
        log.warning(
            "%s (pid %d) exited with code %s; restarting in %.2fs",
            child.process.name,
            child.proc.pid,
            code,
            child.backoff,
        )

    # -- status --------------------------------------------------------------------------

    def _rate(self, key: str, value: int, now: float) -> float:
        prev = self._rates.get(key)
        self._rates[key] = (now, value)
        if prev is None or now <= prev[0]:
            return 0.0
        return (value - prev[1]) / (now - prev[0])

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        ticks = self.ring.publish_cursor
        intents = sum(q.head for q, _ in self.queues)
        ex = self.last_status.get(Role.EXECUTION, {})
        gaps = sum(r["lost"] for r in self.ring.readers())
        return {
            "ticks": ticks,
            "ticks_per_s": self._rate("ticks", ticks, now),
            "intents": intents,
            "intents_per_s": self._rate("intents", intents, now),
            "fills": ex.get("fills", 0),
            "rejects": sum(ex.get("rejects", {}).values()),
            "rejects_by_reason": ex.get("rejects", {}),
            "realized_pnl": ex.get("realized", 0.0),
            "unrealized_pnl": ex.get("unrealized", 0.0),
            "fees": ex.get("fees", 0.0),
            "pnl_net": pnl_net(
                ex.get("realized", 0.0), ex.get("unrealized", 0.0), ex.get("fees", 0.0)
            ),
            "open_orders": ex.get("open_orders", 0),
            "trading": ex.get("trading", self.config.trading.state),
            "ring_lost": gaps,
            "restarts": sum(c.incarnation - 1 for c in self.children.values()),
        }

    def status_line(self) -> None:
        self.service.status(self.status())

    # -- reload --------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config file; apply what can change live, report the rest."""
        if self.config_path is None:
            log.warning("reload requested but the config came from no file")
            return
        self.service.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            self.service.reload_rejected(str(exc))
            return
        changes = diff_config(self.config, new)
        live = [c for c in changes if c.live]
        needs = [c for c in changes if not c.live]
        if self.config.trading.state != new.trading.state:
            self.service.trading_changed(self.config.trading.state, new.trading.state, "reload")
        if live:
            self.config = self._merge_live(new, needs)
            for child in self.children.values():
                if child.down is not None:
                    child.down.send("reload", config=self.config.model_dump(mode="json"))
        self.service.reload_applied(live, needs)

    def flatten(self) -> None:
        """SIGUSR1 (`dynamind flatten`): execution goes reduce-only and closes out."""
        self.service.flattening()
        ex = self.children.get(Role.EXECUTION)
        if ex is not None and ex.alive:
            ex.down.send("flatten")

    def _merge_live(self, new: Config, needs: list) -> Config:
        # Restart-only changes are not applied, so the running config keeps their old
        # values: start from the new file and put those back.
        if not needs:
            return new
        restart_only = {"instance", "ring_capacity", "queue_capacity", "symbols", "hosts"}
        data = new.model_dump()
        old = self.config.model_dump()
        for key in restart_only:
            data[key] = old[key]
        return Config.model_validate(data)

    # -- stop ----------------------------------------------------------------------------

    def _stop_children(self, names: list[str], kind: str, timeout: float) -> None:
        for n in names:
            c = self.children.get(n)
            if c is not None and c.alive:
                c.down.send(kind)  # a live child's queue: see _killed
        deadline = time.monotonic() + timeout
        for n in names:
            c = self.children.get(n)
            if c is None or c.proc is None:
                continue
            c.proc.join(max(0.0, deadline - time.monotonic()))
            if c.proc.is_alive():
                log.error("%s did not stop within %.0fs; killing it", n, timeout)
                c.proc.kill()
                c.proc.join(5)
            log.info("%s stopped (exit code %s)", n, c.proc.exitcode)

    def _drain(self) -> int:
        """Have execution take every queued intent; returns how many were left (0 = all).

        A queue must not be unlinked with published intents in it: if execution is down,
        or dies while draining, it is started again for the drain (a few times at most).
        """
        ex = self.children.get(layout.drainer(self.config))
        if ex is None or (self.halted and not ex.alive):
            # halted: a crash-looping execution is not restarted, a live one still drains
            return sum(len(iq) for iq, _ in self.queues)
        for _ in range(DRAIN_ATTEMPTS):
            if not ex.alive:
                self._spawn(ex)
            self._stop_children([ex.process.name], "drain", DRAIN_TIMEOUT_S)
            left = sum(len(iq) for iq, _ in self.queues)
            if ex.proc.exitcode == 0 and left == 0:
                return 0
            log.error(
                "execution exited with %s while draining, %d intents still queued; draining again",
                ex.proc.exitcode,
                left,
            )
        left = sum(len(iq) for iq, _ in self.queues)
        log.critical("%d published intents could not be drained", left)
        return left

    def stop(self) -> int:
        """Intake first, then drain execution, then the rest; unlink every segment.

        Returns the number of published intents that could not be drained (0 normally).
        """
        self.service.stopping()
        undrained = 0
        try:
            if self.children:
                intake = [
                    n
                    for n, c in self.children.items()
                    if c.process.role in (Role.FEED, Role.AGENT_HOST, Role.GATEWAY)
                ]
                self._stop_children(intake, "stop", STOP_TIMEOUT_S)
                undrained = self._drain()
                drainer = layout.drainer(self.config)
                rest = [n for n in self.children if n not in intake and n != drainer]
                self._stop_children(rest, "stop", STOP_TIMEOUT_S)
                self._pump_events()  # the last status and execution's final report
        finally:
            if self.stats is not None and hasattr(self, "_my_slot"):
                self._my_slot.close()
            self.destroy_segments()
            log.info("stopped; segments removed")
        return undrained


def _killed(child: Child) -> bool:
    """A child that died by a signal may have died holding its control queue's lock
    (faster-fifo's mutex is not robust): never touch that queue again."""
    return child.proc is not None and (child.proc.exitcode or 0) < 0


def run_appliance(config_path: str | Path, duration: float | None = None) -> int:
    """`dynamind run`: load the config (nothing starts if it is invalid) and supervise."""
    config = load_config(config_path)
    return Supervisor(config, config_path).run(duration)

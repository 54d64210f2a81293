"""The supervisor: starts the appliance, watches it, stops it in order.

It is the process systemd starts (Type=notify). It creates every shared-memory segment
(segments.py, so queued intents outlive any worker), spawns the workers with the spawn
start method, pins them, and watches exit codes and heartbeats (children.py: restarts with
backoff and the restart-intensity limit). Messages from the workers are handled in
inbox.py, SIGHUP reloads in reload.py, the status line in status.py. SIGTERM/SIGINT stop
it in order: intake first, then execution drains the intent queues and flushes the
journal, then the rest.
"""

from __future__ import annotations

import logging
import os
import signal
import time

from appliance.config import Config, ConfigError
from appliance.model.enums import Role
from appliance.runtime import layout, logs
from appliance.runtime.children import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Children,
    Halted,
    NotReady,
)
from appliance.runtime.cpu import CpuPlan, plan
from appliance.runtime.desk import desk_dir, prepare
from appliance.runtime.exits import Exit
from appliance.runtime.inbox import Inbox
from appliance.runtime.messages import Drain, Reload, Stop
from appliance.runtime.positions import SETTLE_TIMEOUT_S
from appliance.runtime.reload import ReloadPlan, ReloadRefused, plan_reload
from appliance.runtime.segments import SegmentSet
from appliance.runtime.service import ServiceReport, stale_workers
from appliance.runtime.status import StatusReporter
from appliance.shm.stats import SlotState
from appliance.trading.layout_check import LayoutMismatch, layout_problems

log = logging.getLogger(__name__)

LOOP_S = 0.05
DRAIN_ATTEMPTS = 3


class StartFailed(RuntimeError):
    """A worker failed before the appliance was ever ready; everything started was
    stopped. The message names the worker and the cause it reported."""


class Supervisor:
    def __init__(self, config: Config, config_path: str | os.PathLike[str] | None = None) -> None:
        self.config = config
        self.config_path = config_path
        # sd_notify, the board segment and status lines: see service.py
        self.service = ServiceReport()
        self.segments = SegmentSet(config)
        self.inbox = Inbox()
        self.reporter = StatusReporter(self.segments)
        self.cpu: CpuPlan | None = None
        self.children: Children | None = None
        self._stop_requested = False
        self._reload_requested = False
        self._stop_spawns = 0  # execution started again while the intake stops
        # The start failed: what failed is not started again at the stop. Before its first
        # ready a worker's failure is deterministic (config, journal, paths) or at least
        # not a crash of a running worker, which is what restarts are for.
        self._start_failed = False

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
        # First: a second start of a running instance reads nothing and touches nothing.
        self.segments.refuse_if_running()
        self.check_journal()
        if cfg.runs_execution:  # a desk someone else made is refused before anything starts
            os.close(prepare(desk_dir(cfg.journal_path), cfg.operator_group))
        # Workers are pinned to one core each: a BLAS thread pool inside one would only
        # fight its own process for that core. Children read these at numpy import.
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        procs = layout.processes(cfg)
        self.cpu = plan([p.name for p in procs], cfg.cpu.mode, cfg.cpu.cores, cfg.wait)
        log.info("cpu layout: %s", self.cpu.note)
        if self.cpu.shared and cfg.wait == "auto":
            log.info("fewer cores than processes: every hot loop uses the block strategy")
        self.segments.create()
        self.service.open_board(self.segments.board, cfg.trading.state)
        self._my_slot = self.segments.stats.slot(
            layout.SUPERVISOR_SLOT, Role.SUPERVISOR, Role.SUPERVISOR
        )
        self._my_slot.state(SlotState.RUNNING)
        self.children = Children(cfg, self.cpu.strategy, self.segments.stats, self.inbox.read)
        for p in procs:
            self.children.add(p, self.cpu.cores[p.name])
        # Readers first, so the feed's first tick already has everyone registered.
        readers = [p.name for p in procs if p.role != Role.FEED]
        for step in (readers, [Role.FEED]):
            for n in step:
                self.children.spawn(self.children.get(n))
            # the supervisor's beat while starting: starting is not hanging
            try:
                self.children.wait_ready(
                    step, READY_TIMEOUT_S, lambda: self._stop_requested, self._my_slot.beat
                )
            except NotReady as exc:
                self._start_failed = True
                raise StartFailed(str(exc)) from None
            if self._stop_requested:
                return  # stop now; run() stops whatever did start
        self.service.ready(len(procs))
        log.info("appliance %s ready: %d workers", cfg.instance, len(procs))

    # -- the watch loop ------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._reload_requested = True
        else:
            self._stop_requested = True

    def install_signals(self) -> None:
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
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
        except StartFailed as exc:
            log.error("start failed: %s; stopping what did start", exc)
            raise
        finally:
            # Refused before the segments existed (already running, journal conflict):
            # nothing of ours to stop, and another instance's segments are not ours.
            if self.segments.created and self.stop() and code == 0:
                code = Exit.UNDRAINED
        return code

    def watch(self, duration: float | None) -> int:
        t0 = time.monotonic()
        next_status = t0 + self.config.status_interval_s
        while not self._stop_requested:
            now = time.monotonic()
            if duration is not None and now - t0 >= duration:
                log.info("duration of %.1fs reached; stopping", duration)
                break
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            self.inbox.read_all(self.children)
            self.children.check(now)
            self._my_slot.beat()
            if now >= next_status:
                next_status = now + self.config.status_interval_s
                self.service.status(
                    self.reporter.status(self.children, self.inbox.last_status, self.config)
                )
            self._watchdog(now)
            time.sleep(LOOP_S)
        return 0

    def _watchdog(self, now: float) -> None:
        interval = self.service.notifier.watchdog_interval
        if interval is None:
            return
        ready = [(c.name, c.process.stats_slot) for c in self.children if c.ready and c.alive]
        heartbeats = self.segments.stats.slots["heartbeat_ns"]
        self.service.watchdog(now, stale_workers(ready, heartbeats, int(interval * 1e9)))

    # -- reload --------------------------------------------------------------------------

    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply it whole, or refuse it whole."""
        if self.config_path is None:
            log.warning("reload requested but the config came from no file")
            return
        self.service.reloading()
        try:
            change = plan_reload(self.config, self.cpu, self.config_path)
        except ConfigError as exc:
            self.service.reload_rejected(str(exc))
        except ReloadRefused as exc:
            self.service.reload_rejected(f"nothing applied: {exc}")
        else:
            self._apply(change)
            self.service.reload_applied(change.live, change.restart)

    def _apply(self, change: ReloadPlan) -> None:
        if change.unchanged:
            return
        new = change.config
        if new.trading.state != self.config.trading.state:
            self.service.trading_changed(self.config.trading.state, new.trading.state, "reload")
        if new.log_format != self.config.log_format:
            logs.setup(new.log_format)
        self.config = self.children.config = new
        self.cpu = change.cpu
        dumped = new.model_dump(mode="json")
        for child in self.children:
            if child.name not in change.restart:
                child.tell(Reload(config=dumped))
        for name in change.restart:
            child = self.children.get(name)
            if child is not None:
                child.cores = change.cpu.cores[name]
                self.children.restart(child)

    # -- stop ----------------------------------------------------------------------------

    def _execution_up(self, wait: bool) -> None:
        """At a stop: start execution again at once if it is down (its restart was
        pending, or it just died; a few times at most), and with ``wait``, wait until it
        is ready (recovered) before the intake stops.

        Agent hosts check their positions against execution as they stop, and it must take
        their last intents; waiting for the drain to bring it back, or stopping the hosts
        while it still recovers, would leave their checks unsettled. A halted appliance
        does not restart its crash-looping execution. On a cluster's agents instance the
        uplink stands in for execution (layout.drainer).
        """
        self.inbox.read_all(self.children)
        ex = self.children.get(layout.drainer(self.config))
        hosts = [c for c in self.children if c.process.role == Role.AGENT_HOST]
        if ex is None or self.children.halted or self._start_failed:
            return  # not started again: it kept failing, or it failed to start
        if not any(c.alive for c in hosts):
            return  # no host left to check
        if not ex.alive and self._stop_spawns < DRAIN_ATTEMPTS:
            self._stop_spawns += 1
            log.warning("%s is down at the stop; starting it for the hosts' checks", ex.name)
            self.children.spawn(ex)
        if wait and ex.alive and not ex.ready:
            try:
                self.children.wait_ready([ex.name], READY_TIMEOUT_S, lambda: False)
            except RuntimeError as exc:
                log.error("at the stop: %s; the hosts' checks may not settle", exc)

    def _drainer_started(self) -> bool:
        """False when execution failed to start: the hosts have nothing to compare with."""
        ex = self.children.get(layout.drainer(self.config))
        return not self._start_failed or (ex is not None and ex.ready)

    def _drain(self) -> int:
        """Have execution (or the uplink: layout.drainer) take every queued intent; returns
        how many were left (0 = all).

        A queue must not be unlinked with published intents in it: if execution is down,
        or dies while draining, it is started again for the drain (a few times at most).
        """
        ex = self.children.get(layout.drainer(self.config))
        if ex is None or ((self.children.halted or self._start_failed) and not ex.alive):
            # halted: a crash-looping execution is not restarted, a live one still drains;
            # one that failed to start would only fail again
            return self.segments.queued_intents()
        for _ in range(DRAIN_ATTEMPTS):
            if not ex.alive:
                self.children.spawn(ex)
            self.children.stop([ex.name], Drain(), self.config.supervisor.drain_timeout_s)
            left = self.segments.queued_intents()
            if ex.proc.exitcode == 0 and left == 0:
                return 0
            log.error(
                "%s exited with %s while draining, %d intents still queued; draining again",
                ex.name,
                ex.proc.exitcode,
                left,
            )
        left = self.segments.queued_intents()
        if left:
            log.critical("%d published intents could not be drained", left)
        return left

    def stop(self) -> int:
        """Intake first, then drain execution, then the rest; unlink every segment but the
        intent queues still holding intents (left for the next start to journal).

        Returns the number of published intents that could not be drained (0 normally).
        """
        self.service.stopping()
        undrained = 0
        try:
            if self.children:
                intake = [c.name for c in self.children if c.process.role in INTAKE]
                self._execution_up(wait=True)
                status = self.inbox.last_status.get(layout.drainer(self.config))
                takes = status is None or status.takes_intents
                # While the intake stops, execution stays up (restarted if it dies).
                # The hosts' positions checks may wait that long for execution to settle.
                self.children.stop(
                    intake,
                    Stop(check=takes and self._drainer_started()),
                    SETTLE_TIMEOUT_S + STOP_TIMEOUT_S,
                    lambda: self._execution_up(wait=False),
                )
                undrained = self._drain()
                drainer = layout.drainer(self.config)
                rest = [c.name for c in self.children if c.process.role not in (*INTAKE, drainer)]
                self.children.stop(rest, Stop(), STOP_TIMEOUT_S)
                self.inbox.read_all(self.children)  # last statuses, checks, the final report
        finally:
            if hasattr(self, "_my_slot"):
                self._my_slot.close()
            drainer = self.inbox.last_status.get(layout.drainer(self.config))
            held = drainer is not None and not drainer.takes_intents  # storage: its reason
            self.segments.leave_queued(
                drainer.trading_why if held else "the drain did not finish"
            )
            self.segments.destroy()
            log.info("stopped; segments removed")
        return undrained


# The gateway is intake too: remote hosts' intents enter through it.
INTAKE = (Role.FEED, Role.AGENT_HOST, Role.GATEWAY)

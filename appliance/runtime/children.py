"""The supervisor's children: one per worker process, spawned, watched and restarted.

A child that dies or stops beating is restarted with exponential backoff, and more than
``supervisor.max_restarts`` restarts of one process within ``supervisor.restart_window_s``
halt the appliance (:class:`Halted`). A *planned* restart (a reload that concerns the
process) stops the child, waits for it to exit and starts it again with the running
config, at once and without counting toward that limit: the new incarnation recovers
exactly as after a crash.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from appliance.config import Config, SupervisorConfig
from appliance.runtime import layout
from appliance.runtime.control import Channel
from appliance.runtime.messages import Message, Stop
from appliance.runtime.worker import WorkerSpec, run
from appliance.shm import Stats
from appliance.shm.wait import WaitStrategy

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
STABLE_S = 10.0  # a worker up this long has its backoff reset
POLL_S = 0.01


class Halted(RuntimeError):
    """The restart-intensity limit was exceeded."""


class NotReady(RuntimeError):
    """Workers did not become ready: one exited first (``worker``, with the cause it
    reported, if any) or the wait timed out (``worker`` None)."""

    def __init__(self, message: str, worker: str | None = None) -> None:
        super().__init__(message)
        self.worker = worker


@dataclass
class RestartPolicy:
    """Exponential backoff and the restart-intensity limit of one process."""

    backoff: float = 0.0
    recent: deque[float] = field(default_factory=deque)  # restart times within the window

    def delay(self, limits: SupervisorConfig, now: float, up_for: float) -> float | None:
        """Seconds to wait before restarting a process that exited after ``up_for``
        seconds; None when this restart would exceed the restart-intensity limit."""
        recent = self.recent
        recent.append(now)
        while recent and now - recent[0] > limits.restart_window_s:
            recent.popleft()
        if len(recent) > limits.max_restarts:
            return None
        if up_for > STABLE_S:
            self.backoff = 0.0
        self.backoff = (
            limits.restart_backoff_initial_s
            if self.backoff == 0
            else min(self.backoff * 2, limits.restart_backoff_max_s)
        )
        return self.backoff


@dataclass
class Child:
    process: layout.Process
    cores: list[int]
    proc: mp.process.BaseProcess | None = None
    down: Channel | None = None
    up: Channel | None = None
    incarnation: int = 0
    started: float = 0.0
    ready: bool = False
    restart_at: float | None = None  # a restart after an exit, scheduled
    stop_by: float | None = None  # a planned restart: told to stop, must exit by then
    exits: list[int | None] = field(default_factory=list)
    error: str | None = None  # what its last incarnation reported failing with (Error)
    policy: RestartPolicy = field(default_factory=RestartPolicy)

    @property
    def name(self) -> str:
        return self.process.name

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    @property
    def killed(self) -> bool:
        """Died by a signal: it may have died holding its control queue's lock
        (faster-fifo's mutex is not robust), so that queue is never touched again."""
        return self.proc is not None and (self.proc.exitcode or 0) < 0

    def tell(self, message: Message) -> None:
        """Send a control message to a live child."""
        if self.down is not None and self.alive:
            self.down.send(message)


class Children:
    """Every worker process of the appliance, by name, in start order."""

    def __init__(
        self,
        config: Config,
        strategy: WaitStrategy,
        stats: Stats,
        read: Callable[[Child], None],
    ) -> None:
        self.config = config  # the running config: what a (re)started child gets
        self.strategy = strategy
        self.stats = stats
        self.read = read  # handles what a child sent (its up channel)
        self.ctx = mp.get_context("spawn")
        self._by_name: dict[str, Child] = {}
        self.halted = False

    def add(self, process: layout.Process, cores: list[int]) -> Child:
        child = self._by_name[process.name] = Child(process, cores)
        return child

    def __iter__(self) -> Iterator[Child]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Child | None:
        return self._by_name.get(name)

    def spawn(self, child: Child) -> None:
        if child.up is not None and not child.killed:
            self.read(child)  # what the previous incarnation said last
        child.incarnation += 1
        child.down, child.up = Channel("down"), Channel("up")  # fresh: see control.py
        spec = WorkerSpec(
            process=child.process,
            config=self.config,
            cores=child.cores,
            strategy=self.strategy,
            incarnation=child.incarnation,
            supervisor_pid=os.getpid(),
        )
        proc = self.ctx.Process(
            target=run, args=(spec, child.down, child.up), name=child.name, daemon=False
        )
        proc.start()
        child.proc = proc
        child.started = time.monotonic()
        child.restart_at = child.stop_by = None
        child.ready = False
        child.error = None
        log.info(
            "started %s pid=%d cores=%s incarnation=%d",
            child.name,
            proc.pid,
            child.cores,
            child.incarnation,
        )

    def wait_ready(
        self,
        names: list[str],
        timeout: float,
        cancelled: Callable[[], bool],
        meanwhile: Callable[[], None] = lambda: None,
    ) -> None:
        """Until every child in ``names`` said it is ready, calling ``meanwhile`` while
        waiting; RuntimeError if one exits first or ``timeout`` passes; returns early when
        ``cancelled()``."""
        deadline = time.monotonic() + timeout
        while True:
            meanwhile()
            for c in self:
                self.read(c)
            if all(self._by_name[n].ready for n in names) or cancelled():
                return
            for n in names:
                c = self._by_name[n]
                if not c.alive and not c.ready:
                    self.read(c)  # the Error it sent just before it exited
                    cause = f": {c.error}" if c.error else ""
                    raise NotReady(
                        f"{n} exited with code {c.proc.exitcode} before it was ready{cause}", n
                    )
            if time.monotonic() > deadline:
                late = [n for n in names if not self._by_name[n].ready]
                raise NotReady(f"workers not ready after {timeout:.0f}s: {', '.join(late)}")
            time.sleep(POLL_S)

    # -- watching -------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Restart what is due, finish planned restarts, catch exits and stalls."""
        for child in self:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self.spawn(child)
            elif child.stop_by is not None:
                self._planned(child, now)
            elif child.proc is not None:
                why = self._stalled(child, now) if child.alive else None
                if child.alive and why is None:
                    continue
                if why is not None:
                    log.error("%s (pid %d) %s; killing it", child.name, child.proc.pid, why)
                    child.proc.kill()
                    child.proc.join(5)
                self._schedule_restart(child, now)

    def _stalled(self, child: Child, now: float) -> str | None:
        # Before it is ready a worker may be busy recovering (execution replays its
        # journal): it gets READY_TIMEOUT_S for that, heartbeats only after.
        if not child.ready:
            if now - child.started > READY_TIMEOUT_S:
                return f"not ready after {READY_TIMEOUT_S:.0f}s"
            return None
        beat = int(self.stats.slots[child.process.stats_slot]["heartbeat_ns"])
        age = time.monotonic_ns() - beat
        if age > int(self.config.supervisor.heartbeat_timeout_s * 1e9):
            return f"missed heartbeats for {age / 1e9:.1f}s"
        return None

    def _schedule_restart(self, child: Child, now: float) -> None:
        code = child.proc.exitcode
        child.exits.append(code)
        limits = self.config.supervisor
        delay = child.policy.delay(limits, now, now - child.started)
        if delay is None:
            self.halted = True
            raise Halted(
                f"{len(child.policy.recent)} restarts within {limits.restart_window_s:.0f}s of "
                f"{child.name} (limit {limits.max_restarts}); it last exited with {code}"
            )
        child.restart_at = now + delay
        log.warning(
            "%s (pid %d) exited with code %s; restarting in %.2fs",
            child.name,
            child.proc.pid,
            code,
            delay,
        )

    # -- planned restarts and stops -------------------------------------------------------

    def restart(self, child: Child) -> None:
        """A planned restart: tell the child to stop; :meth:`check` starts it again once
        it exited (killing it at STOP_TIMEOUT_S). A child that is down already is just
        started again when its restart is due, with the running config."""
        if not child.alive or child.stop_by is not None:
            return
        child.tell(Stop())
        child.stop_by = time.monotonic() + STOP_TIMEOUT_S

    def _planned(self, child: Child, now: float) -> None:
        if child.alive:
            if now < child.stop_by:
                return
            log.error("%s did not stop within %.0fs; killing it", child.name, STOP_TIMEOUT_S)
            child.proc.kill()
            child.proc.join(5)
        child.exits.append(child.proc.exitcode)
        log.info("%s stopped for a restart (exit code %s)", child.name, child.proc.exitcode)
        self.spawn(child)

    def stop(
        self,
        names: list[str],
        message: Message,
        timeout: float,
        meanwhile: Callable[[], None] = lambda: None,
    ) -> None:
        """Send ``message`` (stop or drain) to each live child of ``names`` and wait for
        them to exit, calling ``meanwhile`` while waiting; kill what is left at
        ``timeout``."""
        chosen = [c for n in names if (c := self._by_name.get(n)) is not None]
        for c in chosen:
            c.tell(message)
        deadline = time.monotonic() + timeout
        while any(c.alive for c in chosen) and time.monotonic() < deadline:
            meanwhile()
            time.sleep(POLL_S)
        for c in chosen:
            if c.proc is None:
                continue
            if c.proc.is_alive():
                log.error("%s did not stop within %.0fs; killing it", c.name, timeout)
                c.proc.kill()
            c.proc.join(5)
            c.stop_by = None
            log.info("%s stopped (exit code %s)", c.name, c.proc.exitcode)

"""What every worker process does before and around its role's loop.

A worker is started by the supervisor with the spawn method. It ties its life to the
supervisor's (parent-death signal plus a parent check), pins itself, takes its stats slot,
and then runs its role's ``main(worker)``. The role loop calls :meth:`Worker.tick` often;
that is where heartbeats, control messages and the parent check happen, at most every
``TICK_S`` seconds so the hot path pays only a clock read.

Control messages are dispatched by type here: stop and drain set flags the role loop reads;
a reload replaces ``Worker.config`` (and the log format) and is handed to the role only if
it subscribed to it (the roles with something to change live: feed rate, risk limits).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

from appliance.config import Config, ConfigError, validate_config
from appliance.model.enums import Role
from appliance.runtime import logs
from appliance.runtime.control import Channel
from appliance.runtime.cpu import pin
from appliance.runtime.layout import COUNTERS, STATS, Process
from appliance.runtime.messages import Drain, Error, Message, Ready, Reload, Stop
from appliance.shm import Stats, StatsSlot
from appliance.shm.stats import SlotState
from appliance.shm.wait import WaitStrategy

log = logging.getLogger(__name__)

TICK_S = 0.02
PR_SET_PDEATHSIG = 1
# The role mains live in a layer above this one: imported by name, never statically.
ROLE_MODULES = {role: f"appliance.workers.{role.value}" for role in Role if role != Role.SUPERVISOR}


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs, pickled to it by the spawn start method."""

    process: Process
    config: Config
    cores: list[int]
    strategy: WaitStrategy
    incarnation: int
    supervisor_pid: int


class Worker:
    """The runtime context a role's main loop uses."""

    def __init__(self, spec: WorkerSpec, down: Channel, up: Channel, stats: Stats) -> None:
        self.spec = spec
        self.config = spec.config
        self.process = spec.process
        self.strategy = spec.strategy
        self.down = down
        self.up = up
        self.stats = stats
        self.slot: StatsSlot = stats.slot(
            spec.process.stats_slot,
            spec.process.role,
            spec.process.name,
            spec.cores[0] if len(spec.cores) == 1 else -1,
        )
        self.c = {name: self.slot.counter(name) for name in COUNTERS}
        self.stopping = False  # stop intake and leave the loop
        self.check_at_stop = True  # agent hosts: compare positions with execution's first
        self.draining = False  # execution: finish what is queued, then leave
        self.messages: list[Message] = []  # control messages for the role to handle
        self._subscribed: set[type[Message]] = set()
        self._next_tick = 0.0
        self._orphan_seen = False

    @property
    def orphaned(self) -> bool:
        """The supervisor is gone: nobody reads what this process would report."""
        return os.getppid() != self.spec.supervisor_pid

    def subscribe(self, *kinds: type[Message]) -> None:
        """Have messages of these kinds kept in ``messages`` for the role (see tick)."""
        self._subscribed.update(kinds)

    def tick(self) -> bool:
        """Heartbeat, control and parent check; cheap unless TICK_S has passed.

        Returns True when something arrived that the role should look at
        (``self.messages`` or a changed ``stopping``/``draining``).
        """
        now = time.monotonic()
        if now < self._next_tick:
            return False
        self._next_tick = now + TICK_S
        self.slot.beat()
        if self.orphaned:
            if self._orphan_seen:
                return False  # said once; nothing to read from a dead supervisor
            self._orphan_seen = True
            log.error("supervisor (pid %d) is gone; stopping", self.spec.supervisor_pid)
            self.stopping = True
            return True
        got = False
        for msg in self.down.receive():
            match msg:
                case Stop(check=check):
                    self.stopping = True
                    self.check_at_stop = check
                case Drain():
                    self.draining = True
                case Reload():
                    if not self._reload(msg):
                        continue
            if type(msg) in self._subscribed:
                self.messages.append(msg)
            got = True
        return got

    def _reload(self, msg: Reload) -> bool:
        try:
            config = validate_config(msg.config)
        except ConfigError as exc:
            log.error("reload dropped: the config sent is invalid: %s", exc)
            return False
        self.config = config
        logs.setup(config.log_format)
        return True

    def take_messages(self) -> list[Message]:
        msgs, self.messages = self.messages, []
        return msgs

    def send(self, message: Message) -> None:
        """Tell the supervisor something (ready, status figures, errors, reports)."""
        if isinstance(message, Ready):
            # Attached and recovered: from now on the slot says running, and heartbeats
            # count. Beat now: recovery may have taken longer than the heartbeat timeout,
            # and the supervisor judges the heartbeat as soon as it reads this.
            self.slot.beat()
            self.slot.state(SlotState.RUNNING)
        self.up.send(message)

    def add(self, counter: str, n: int = 1) -> None:
        self.slot.add(self.c[counter], n)


def _die_with_parent(parent: int) -> None:
    # The kernel sends SIGTERM when the supervisor dies, however it dies; the parent check
    # covers the window before prctl took effect.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable; relying on the parent check")
    if os.getppid() != parent:
        sys.exit(0)


def run(spec: WorkerSpec, down: Channel, up: Channel) -> None:
    """Process entry point (the spawn target)."""
    logs.setup(spec.config.log_format, process=spec.process.name)
    _die_with_parent(spec.supervisor_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor orchestrates Ctrl-C
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pin(spec.cores)
    stats = Stats.attach(spec.config.instance, STATS)
    worker = Worker(spec, down, up, stats)

    def on_term(signum: int, frame: object) -> None:
        worker.stopping = True

    signal.signal(signal.SIGTERM, on_term)
    role = importlib.import_module(ROLE_MODULES[spec.process.role])
    code = 0
    try:
        role.main(worker)
    except Exception as exc:
        log.exception("%s failed", spec.process.name)
        worker.add("errors")
        worker.send(Error(f"{type(exc).__name__}: {exc}"))
        code = 1
    finally:
        worker.slot.close(SlotState.STOPPED if code == 0 else SlotState.STOPPING)
        stats.close()
    sys.exit(code)

"""The segment set: every shared-memory segment of a config, created and destroyed together.

The supervisor owns them all, so queued intents and published positions outlive any worker.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol, TypeVar

from appliance.config import Config
from appliance.model.records import INTENT, POSITION, REPORT, TICK, RejectReason
from appliance.runtime import layout, live_metrics, stale
from appliance.runtime.board import Board
from appliance.shm import (
    BroadcastRing,
    RecordQueue,
    SegmentError,
    SegmentInUse,
    Stats,
    require_tso,
)
from appliance.shm.segment import full_name, live_owner, reclaim_stale
from appliance.shm.snapshot import SharedSnapshot

log = logging.getLogger(__name__)


class AlreadyRunning(SegmentInUse):
    """An appliance of the same instance name is running; nothing of it was touched."""

    def __init__(self, instance: str, pid: int | str) -> None:
        self.instance = instance
        self.pid = pid
        super().__init__(f"instance {instance} is already running (pid {pid})")


class _Destroyable(Protocol):
    def destroy(self) -> None: ...


T = TypeVar("T", bound=_Destroyable)


class SegmentSet:
    """Stats, the board, the tick ring, and per agent host its intent and report queues and
    positions snapshot."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stats: Stats | None = None
        self.board: Board | None = None  # the supervisor's account for outside readers
        self.ring: BroadcastRing | None = None
        self.queues: list[tuple[RecordQueue, RecordQueue]] = []  # (intents, reports) per host
        self._made: list[_Destroyable] = []

    def create(self) -> None:
        """Create every segment; on failure part-way, what was made is still destroyed by
        :meth:`destroy` (each segment is recorded as soon as it exists)."""
        cfg = self.config
        inst = cfg.instance
        group = cfg.operator_group  # may read every segment (status, top)
        require_tso()
        # The stats segment doubles as the instance lock: a live owner means a running
        # appliance of the same name, which we refuse; a dead one is reclaimed.
        self.refuse_if_running()
        epoch = stale.dead_epoch(inst)  # a crashed run's queues' epoch, before reclaiming
        try:
            stats = Stats.create(
                inst, layout.STATS, layout.stats_slots(cfg), layout.COUNTERS, group
            )
        except SegmentInUse:
            self.refuse_if_running()  # another start won the race: name its pid
            raise
        self.stats = self._keep(stats)
        stale.settle(cfg, epoch)  # what a crashed run left queued, journaled first
        if reclaimed := reclaim_stale(inst):
            sems = [n for n in reclaimed if n.startswith("sem.")]
            segs = [n.removeprefix(f"{inst}.") for n in reclaimed if not n.startswith("sem.")]
            log.warning(
                "reclaiming stale segments of a dead run: %d segments (%s) and %d semaphores",
                len(segs), ", ".join(segs), len(sems),
            )  # fmt: skip
        self.board = self._keep(Board.create(inst, group))
        self.ring = self._keep(
            BroadcastRing.create(inst, layout.TICKS, TICK, cfg.ring_capacity, group)
        )
        self._keep(live_metrics.create(cfg))  # execution publishes, status and top read
        size = cfg.queue_capacity
        # The queues' lifetime, under which execution journals their intents: in their
        # headers too, so a start after a crash still knows it after the stats are gone.
        tag = {stale.EPOCH: int(stats.segment.header["created_ns"])}
        for h in layout.queue_hosts(cfg):  # a cluster's agents instance: its own hosts
            iq = RecordQueue.create(inst, layout.intents_queue(h), INTENT, size, group, tag)
            self._keep(iq)
            rq = RecordQueue.create(inst, layout.reports_queue(h), REPORT, size, group)
            self._keep(rq)
            self.queues.append((iq, rq))
            shape = layout.positions_shape(cfg, h)
            self._keep(
                SharedSnapshot.create(inst, layout.positions_snapshot(h), POSITION, shape, group)
            )

    def refuse_if_running(self) -> None:
        """Raise AlreadyRunning if a live appliance holds this config's instance name."""
        pid = live_owner(full_name(self.config.instance, layout.STATS))
        if pid is not None:
            raise AlreadyRunning(self.config.instance, pid)

    @property
    def created(self) -> bool:
        """True once this set holds the instance (its stats segment exists)."""
        return self.stats is not None

    def _keep(self, segment: T) -> T:
        """Record ``segment`` as one of the set: :meth:`destroy` destroys it too."""
        self._made.append(segment)
        return segment

    def queued_intents(self) -> int:
        """Intents published and not yet taken by execution (or the uplink), over every
        host."""
        return sum(len(iq) for iq, _ in self.queues)

    def leave_queued(self, why: str) -> int:
        """If published intents are still queued (a stop that could not drain them,
        ``why``), close the intent queues without removing them: the next start journals
        what they hold as stale (stale.py), and every host's head with it, before it
        reclaims them. Returns how many intents were left; :meth:`destroy` removes the rest
        of the set as ever."""
        left = self.queued_intents()
        if not left:
            return 0
        held = []
        for iq, _ in self.queues:
            held.append(f"{iq.segment.name} holds {len(iq)}")
            self._made.remove(iq)
            try:
                iq.leave()
            except SegmentError as exc:  # a semaphore stayed: reclaimed with the queue
                log.warning("%s", exc)
        log.critical(
            "%d published intents not drained (%s) left in shared memory: %s; the next "
            "start journals them as rejected (%s), never executed",
            left,
            why,
            ", ".join(held),
            RejectReason.STALE_AFTER_CRASH.name,
        )
        return left

    def destroy(self) -> None:
        for seg in reversed(self._made):
            with contextlib.suppress(Exception):
                seg.destroy()
        self._made.clear()

"""Taking stock of the queues a crashed or undrained run left, before they are reclaimed.

A start that finds the instance's segments left by a dead supervisor reclaims them, and
with the intent queues would go the intents published and never journaled. So once this
start holds the instance (its new stats segment is the lock), every intent queue of the
dead one is read, after the dead supervisor's workers (sent SIGTERM by the kernel) have
let go of it, and what it still holds is journaled as stale on the trading side
(trading/stale_intents.py) under the queue's epoch: the lifetime execution journaled its intents
in, the creation time of that appliance's stats segment, which the queue's header
carries. Only then are the queues reclaimed. If the journal cannot take them, nothing is
reclaimed and the start fails; the next start tries again.

A stop that could not drain (segments.py, ``leave_queued``) leaves the intent queues still
holding intents, and only those, for this same path.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.config import Config
from appliance.model.records import INTENT
from appliance.runtime import layout
from appliance.shm import RecordQueue, SegmentError, SegmentInUse, Stats, list_names
from appliance.shm.segment import full_name, live_owner
from appliance.storage.sqlite import storage_failure
from appliance.trading.journal import Journal
from appliance.trading.stale_intents import StaleSummary, journal_stale

log = logging.getLogger(__name__)

# How long the dead supervisor's workers may take to let go of the queues (they stop at
# their next loop turn; execution finishes the batch it is journaling first).
RELEASE_WAIT_S = 30.0
_INTENTS = re.compile(r"intents\.(\d+)$")
EPOCH = "epoch"  # an intent queue's header entry: the lifetime its intents are journaled in


class StaleNotJournaled(RuntimeError):
    """Intents a crashed or undrained run left queued could not be journaled: nothing
    reclaimed. ``storage``: why, when the journal's filesystem is full or failing (that
    may pass by itself; any other cause needs a person)."""

    def __init__(self, message: str, storage: str | None) -> None:
        super().__init__(message)
        self.storage = storage


def dead_epoch(instance: str) -> int | None:
    """The creation time of the stats segment a dead supervisor left (its queues' epoch);
    None if there is none, it is unreadable, or its owner is alive."""
    name = full_name(instance, layout.STATS)
    try:
        stats = Stats.attach(instance, layout.STATS, read_only=True)
    except SegmentError:
        return None
    try:
        if live_owner(name) is not None:
            return None
        return int(stats.segment.header["created_ns"])
    finally:
        stats.close()


def queued_segments(instance: str) -> list[str]:
    """The intent queues of ``instance`` in /dev/shm (a crash or an undrained stop left)."""
    return [full_name(instance, layout.intents_queue(h)) for h in _queue_hosts(instance)]


def _queue_hosts(instance: str) -> list[int]:
    hosts = []
    for entry in list_names(instance):
        m = _INTENTS.fullmatch(entry[len(instance) + 1 :])
        if m:
            hosts.append(int(m[1]))
    return sorted(hosts)


def _released(queue: RecordQueue, wait_s: float) -> None:
    """Wait until no live process holds the queue's producer or consumer role."""
    deadline = time.monotonic() + wait_s
    while holders := queue.role_holders():
        if time.monotonic() > deadline:
            who = ", ".join(f"{role} pid {pid}" for role, pid in holders)
            raise SegmentInUse(
                f"{queue.segment.name}: a process of the last run still holds it "
                f"({who}); stop it, then start again"
            )
        time.sleep(0.05)


@dataclass(frozen=True)
class Leftover:
    """What one dead intent queue still holds."""

    host: int
    epoch: int | None  # its lifetime (None: a queue made before queues carried it)
    intents: np.ndarray  # published, not consumed
    head: int  # records ever pushed


def leftover_intents(instance: str, wait_s: float = RELEASE_WAIT_S) -> list[Leftover]:
    """What each intent queue of a dead appliance still holds."""
    out = []
    for h in _queue_hosts(instance):
        try:
            q = RecordQueue.attach(instance, layout.intents_queue(h), INTENT, read_only=True)
        except SegmentError as exc:
            log.error("stale intent queue of host %d unreadable, not journaled: %s", h, exc)
            continue
        try:
            _released(q, wait_s)
            out.append(Leftover(h, q.segment.meta.get(EPOCH), q.unconsumed(), int(q.head)))
        finally:
            q.close()
    return out


def settle(config: Config, dead_stats_epoch: int | None, wait_s: float = RELEASE_WAIT_S) -> None:
    """Journal what a dead appliance of ``config``'s instance left queued. A queue's epoch
    is in its header; ``dead_stats_epoch`` (the dead stats segment's creation time, read
    before this start reclaimed it) stands in for queues made without one."""
    by_epoch: dict[int | None, list[Leftover]] = {}
    for left in leftover_intents(config.instance, wait_s):
        by_epoch.setdefault(left.epoch or dead_stats_epoch, []).append(left)
    if not config.runs_execution and by_epoch:
        # A cluster's agents instance keeps no journal: what its uplink had not stored in
        # the stream never reached execution, so no order exists for it anywhere.
        n = sum(len(x.intents) for qs in by_epoch.values() for x in qs)
        log.warning("%d intents the last run left queued were never sent: dropped", n)
        return
    lost = by_epoch.pop(None, [])
    if lost:
        # Queues whose lifetime nothing names any more (stats removed by hand): their
        # intents cannot be told apart from the journal's; say what is lost.
        n = sum(len(x.intents) for x in lost)
        log.error("%d intents left queued by an unknown run cannot be journaled", n)
    for epoch, queues in by_epoch.items():
        n = sum(len(x.intents) for x in queues)
        try:
            summary = _journal(config, str(epoch), queues)
        except Exception as exc:
            storage = storage_failure(exc)
            why = f"storage failing: {storage}" if storage else f"{type(exc).__name__}: {exc}"
            raise StaleNotJournaled(
                f"{n} intents the last run left queued could not be journaled ({why}); "
                "they stay in shared memory for the next start",
                storage,
            ) from exc
        log.warning("queues a crashed or undrained run left: %s", summary)


def _journal(config: Config, epoch: str, queues: list[Leftover]) -> StaleSummary:
    Path(config.journal_path).parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(config.journal_path)
    try:
        return journal_stale(
            journal,
            epoch,
            {x.host: x.intents for x in queues},
            {x.host: x.head for x in queues},
            [s.lot_size for s in config.symbols],
            time.time_ns(),
        )
    finally:
        journal.close()

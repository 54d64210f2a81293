"""A stop that could not drain leaves the intent queues, and only them, for the next start.

The segment set's side in one process: the queues holding published intents stay named
(their semaphores and every other segment go), and the next start on the same journal
journals what they hold as STALE_AFTER_CRASH, with every host's head. The whole appliance
stopping on a full disk: tests/runtime/test_disk_full.py.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from appliance.model.orders import OrderState
from appliance.model.records import INTENT, RejectReason
from appliance.runtime.segments import SegmentSet
from appliance.shm import RecordQueue, list_names, remove_instance


def _push(queue: RecordQueue, n: int, host: int) -> None:
    producer = queue.producer(seq_field="seq")
    rec = np.zeros(n, INTENT)
    rec["host"], rec["qty"], rec["side"], rec["order_type"] = host, 0.01, 1, 1
    producer.push(rec)
    producer.close()


def test_undrained_queues_stay_and_the_next_start_journals_them(config):
    inst = config.instance
    segs = SegmentSet(config)
    try:
        segs.create()
        epoch = str(segs.stats.segment.header["created_ns"])
        _push(segs.queues[1][0], 5, 1)
        assert segs.leave_queued("a test") == 5
    finally:
        segs.destroy()
    try:
        # every host's queue stays (its head is the audit's count), nothing else does
        assert list_names(inst) == [f"{inst}.intents.0", f"{inst}.intents.1"]
        q = RecordQueue.attach(inst, "intents.1", INTENT, read_only=True)
        assert (len(q), q.head) == (5, 5)
        q.close()
        segs = SegmentSet(config)
        try:
            segs.create()
            assert segs.queued_intents() == 0, "reclaimed and created again"
        finally:
            segs.destroy()
        assert list_names(inst) == []
    finally:
        remove_instance(inst)
    with sqlite3.connect(config.journal_path) as db:
        rows = db.execute("SELECT epoch, host, intent_seq, state, reason FROM orders").fetchall()
        drained = db.execute("SELECT epoch, drained FROM runs").fetchall()
    stale = (OrderState.REJECTED, RejectReason.STALE_AFTER_CRASH)
    assert sorted(rows) == [(epoch, 1, s, *stale) for s in range(5)]
    assert drained == [(epoch, '{"0": 0, "1": 5}')]


def test_a_drained_set_leaves_nothing(config):
    segs = SegmentSet(config)
    try:
        segs.create()
        assert segs.leave_queued("a test") == 0
    finally:
        segs.destroy()
    assert list_names(config.instance) == []

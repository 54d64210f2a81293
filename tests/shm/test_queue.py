"""RecordQueue: SPSC across processes; full is an answer; a dead consumer loses nothing."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from appliance.model.records import INTENT, TICK
from appliance.shm import RecordQueue, SegmentInUse, list_names
from appliance.shm.segment import reclaim_stale
from tests.shm.procs import REC, check, make, queue_consumer, queue_peeker, queue_producer

# -- in one process -----------------------------------------------------------------------


def test_push_peek_advance_wraparound(instance: str) -> None:
    q = RecordQueue.create(instance, "q", REC, 16)
    try:
        p, c = q.producer("block"), q.consumer("block")
        sent = got = 0
        for n in [1, 15, 16, 3, 9, 16, 7]:
            assert p.push(make(sent, n)) == n
            sent += n
            while len(c):
                view = c.peek(5)  # a run stops at the end of the array
                assert check(view, got) == (True, 0)
                c.advance(len(view))
                got += len(view)
        assert got == sent == q.head == q.tail
        with pytest.raises(ValueError, match="advancing 1 records but only 0 are queued"):
            c.advance(1)
        p.push(make(sent, 4))
        out = c.pop(10)
        assert check(out, sent) == (True, 0) and len(c) == 0
    finally:
        q.destroy()


def test_a_left_queue_keeps_its_records_for_a_later_reader(instance: str) -> None:
    q = RecordQueue.create(instance, "q", REC, 16)
    p = q.producer("block")
    p.push(make(0, 5))
    p.close()
    q.leave()
    del p, q  # their views keep the mapping, and with it the owner's lock
    # the segment alone stays: no semaphore, no owner
    assert list_names(instance) == [f"{instance}.q"]
    later = RecordQueue.attach(instance, "q", REC, read_only=True)
    try:
        assert len(later) == 5 and check(later.unconsumed(), 0) == (True, 0)
    finally:
        later.close()
    assert reclaim_stale(instance) == [f"{instance}.q"]


def test_negative_counts_are_refused(instance: str) -> None:
    q = RecordQueue.create(instance, "q", REC, 16)
    try:
        p, c = q.producer("block"), q.consumer("block")
        assert p.push(make(0, 10)) == 10
        for call in (lambda: c.peek(-1), lambda: c.advance(-2), lambda: c.pop(-1)):
            with pytest.raises(ValueError, match="cannot"):
                call()
        assert len(q) == 10 and q.tail == 0 and p.free() == 6
        assert check(c.pop(16), 0) == (True, 0)
        p.close()
        c.close()
    finally:
        q.destroy()


def test_full_is_an_answer_not_a_wait(instance: str) -> None:
    q = RecordQueue.create(instance, "q", REC, 8)
    try:
        p = q.producer("block")  # no consumer at all
        assert p.push(make(0, 5)) == 5
        assert p.free() == 3
        assert p.push(make(5, 5)) == 3  # fewer than asked: the queue is full
        assert p.push(make(8, 1)) == 0
        assert p.push_wait(make(8, 2), timeout=0.05) == 0  # gives up, never hangs
        c = q.consumer("block")
        assert c.wait(timeout=0) and check(c.pop(8), 0) == (True, 0)
        assert not c.wait(timeout=0.01)
        assert p.push_wait(make(8, 2), timeout=0.05) == 2
    finally:
        q.destroy()


def test_seq_stamping_with_intents(instance: str) -> None:
    q = RecordQueue.create(instance, "intents", INTENT, 4)
    try:
        p, c = q.producer("block", seq_field="seq"), q.consumer("block")
        intents = np.zeros(3, INTENT)
        intents["qty"] = [1.0, 2.0, 3.0]
        for _ in range(3):
            assert p.push(intents[:1]) == 1  # the one-record path
            c.advance(1)
        assert p.push(intents) == 3  # wraps
        out = np.concatenate([c.pop(3), c.pop(3)])
        assert out["seq"].tolist() == [3, 4, 5] and out["qty"].tolist() == [1.0, 2.0, 3.0]
        assert p.next_seq == 6
    finally:
        q.destroy()


def test_wrong_records_and_second_roles_refused(instance: str) -> None:
    q = RecordQueue.create(instance, "q", REC, 8)
    other = RecordQueue.attach(instance, "q", REC, 8)
    try:
        p, c = q.producer("block"), q.consumer("block")
        with pytest.raises(TypeError) as err:
            p.push(np.zeros(2, TICK))
        assert str(REC) in str(err.value) and str(TICK) in str(err.value)
        with pytest.raises(TypeError, match="numpy array"):
            p.push(b"\0" * 64)  # type: ignore[arg-type]
        assert q.head == 0  # nothing went in
        me = f"pid {os.getpid()}"
        with pytest.raises(SegmentInUse, match=f"live producer \\({me}\\)"):
            other.producer("block")
        with pytest.raises(SegmentInUse, match=f"live consumer \\({me}\\)"):
            other.consumer("block")
        with pytest.raises(SegmentInUse, match="live producer"):
            q.producer("block")
        p.close()
        c.close()
        other.producer("block").close()
        other.consumer("block").close()
    finally:
        other.close()
        q.destroy()


# -- across processes ---------------------------------------------------------------------


def test_producer_consumer_millions(instance: str, procs) -> None:
    total = 3_000_000
    q = RecordQueue.create(instance, "q", REC, 1 << 14)
    try:
        saw_full = procs.event()
        # the consumer starts only once the producer has been told "full" at least once
        procs.start(queue_consumer, "consumer", instance, "q", total, 4096, saw_full)
        procs.expect("ready", "consumer")
        procs.start(queue_producer, "producer", instance, "q", total, 512, saw_full)
        sent = procs.expect("done", "producer", timeout=120)
        got = procs.expect("done", "consumer", timeout=120)
        assert q.head == q.tail == total
    finally:
        q.destroy()
    assert sent["sent"] == sent["head"] == total
    assert sent["full"] >= 1  # short pushes were reported, and the producer finished
    assert got["received"] == total and got["left"] == 0
    assert got["disorder"] == 0 and got["bad"] == 0


def test_killed_consumer_leaves_its_records(instance: str, procs) -> None:
    q = RecordQueue.create(instance, "q", REC, 8192)
    try:
        p = q.producer("block")
        assert p.push(make(0, 5000)) == 5000
        peeker = procs.start(queue_peeker, "peeker", instance, "q", 1000, 700)
        info = procs.expect("peeking", "peeker")
        assert info == {"pid": peeker.pid, "tail": 1000, "first": 1000, "n": 700}
        with pytest.raises(SegmentInUse, match=f"live consumer \\(pid {peeker.pid}\\)"):
            q.consumer("block")
        procs.kill(peeker)  # it peeked at 1000..1699 but never advanced past 1000
        assert q.tail == 1000 and len(q) == 4000
        procs.start(queue_consumer, "next", instance, "q", 4000, 300, None)
        got = procs.expect("done", "next")
        assert got == {"received": 4000, "disorder": 0, "bad": 0, "left": 0}
        assert q.tail == q.head == 5000
        p.close()
    finally:
        q.destroy()


def test_killed_producer_publishes_nothing_partial(instance: str, procs) -> None:
    total = 1_500_000
    rng = random.Random(os.getpid())
    q = RecordQueue.create(instance, "q", REC, 1 << 14)
    try:
        procs.start(queue_consumer, "consumer", instance, "q", total, 2048, None)
        procs.expect("ready", "consumer")
        for i in range(3):
            producer = procs.start(
                queue_producer, f"p{i}", instance, "q", total, 4096, procs.event()
            )
            procs.expect("ready", f"p{i}")
            procs.kill_after(producer, rng.uniform(0.01, 0.1))
        last = procs.start(queue_producer, "last", instance, "q", total, 4096, procs.event())
        sent = procs.expect("done", "last", timeout=120)
        got = procs.expect("done", "consumer", timeout=120)
        assert procs.join(last) == 0
    finally:
        q.destroy()
    assert sent["head"] == total
    assert got["received"] == total and got["left"] == 0
    assert got["disorder"] == 0 and got["bad"] == 0

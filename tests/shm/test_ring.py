"""BroadcastRing: one writer, many readers, real processes, wraparound, laps, crashes."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from appliance.model.records import TICK
from appliance.shm import BroadcastRing, RecordQueue, SegmentInUse
from tests.shm.procs import (
    REC,
    check,
    hold_roles,
    make,
    ring_batch_holder,
    ring_reader,
    ring_torn_writer,
    ring_writer,
    words,
)


def drain(reader, total: int, max_batch: int = 1000) -> tuple[int, int]:
    """Read in-process until ``total``; returns (disordered or torn batches, accepted)."""
    errors = 0
    while reader.position < total:
        view = reader.read(max_batch)
        in_order, bad = check(view, reader.position - len(view))
        if reader.valid():
            errors += (not in_order) + bad
    return errors, reader.accepted


# -- in one process -----------------------------------------------------------------------


def test_wraparound_in_process(instance: str) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 64)
    try:
        w = ring.writer("block")
        r = ring.reader("block", start=0)
        seq = 0
        for n in [1, 63, 64, 65, 7, 200, 3, 1000]:  # crosses the end in every way
            w.write(make(seq, n))
            seq += n
            view = r.read(10_000)
            in_order, bad = check(view, r.position - len(view))
            assert r.valid() and in_order and bad == 0
            while r.available():  # second half of a wrapped run, or a lap
                view = r.read(10_000)
                in_order, bad = check(view, r.position - len(view))
                assert r.valid() and in_order and bad == 0
        assert r.position == seq == ring.publish_cursor == w.written
        assert r.accepted + r.lost == seq
        assert r.lost > 0  # the 200 and 1000 batches lapped it
        assert r.lost == seq - r.accepted
        r.close()
        w.close()
    finally:
        ring.destroy()


def test_seq_field_stamping_and_zero_copy(instance: str) -> None:
    ring = BroadcastRing.create(instance, "ticks", TICK, 16)
    try:
        w = ring.writer("block", seq_field="seq")
        r = ring.reader("block", start="oldest")
        ticks = np.zeros(10, TICK)
        ticks["seq"] = 999  # overwritten by the ring position
        w.write(ticks)
        view = w.claim(100)  # at most the contiguous room to the end of the array
        assert len(view) == 6
        view["bid"] = 1.5
        w.publish(4)
        with pytest.raises(ValueError, match="only 2 were claimed"):
            w.publish(3)
        got = r.read(100)
        assert list(got["seq"]) == list(range(14)) and r.valid()
        assert list(got["bid"][10:]) == [1.5] * 4
        w.write(ticks[:1])  # the claimed-but-unpublished slots are simply reused
        assert r.read(100)["seq"].tolist() == [14] and r.valid()
        r.close()
        w.close()
    finally:
        ring.destroy()


@pytest.fixture
def lapped(instance: str):
    """A 16-record ring after 40 records (24..39 still valid), and its writer."""
    ring = BroadcastRing.create(instance, "r", REC, 16)
    w = ring.writer("block")
    w.write(make(0, 40))
    yield ring, w
    w.close()
    ring.destroy()


def test_start_positions_and_lag(lapped) -> None:
    ring, _ = lapped
    assert ring.reader("block", start="latest").position == 40
    oldest = ring.reader("block", start="oldest")
    assert oldest.position == 24
    r = ring.reader("block", start=32, slot=5)
    r.read(4)
    assert r.valid()
    lag = {e["slot"]: e for e in ring.readers()}
    assert lag[5]["lag"] == 4 and lag[5]["cursor"] == 36 and lag[5]["alive"]
    assert lag[oldest.slot]["lag"] == 16
    r.close()
    resumed = ring.reader("block", start="resume", slot=5)
    assert resumed.position == 36
    with pytest.raises(SegmentInUse, match="reader slot 5 is held by pid"):
        ring.reader("block", slot=5)


def test_start_positions_are_clamped_to_the_valid_records(lapped) -> None:
    ring, w = lapped
    ahead = ring.reader("block", start=100)
    assert ahead.position == 40
    assert [ring.reader("block", start=s).position for s in (3, -5, 24, 30)] == [24, 24, 24, 30]
    with pytest.raises(ValueError, match="start must be"):
        ring.reader("block", start="newest")
    w.write(make(40, 2))
    view = ahead.read(10)
    assert check(view, 40) == (True, 0) and len(view) == 2
    assert ahead.valid() and ahead.accepted == 2 and ahead.lost == 0


def test_wrong_records_refused(instance: str) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 16)
    try:
        w = ring.writer("block")
        with pytest.raises(TypeError) as err:
            w.write(np.zeros(3, TICK))
        assert str(REC) in str(err.value) and str(TICK) in str(err.value)
        with pytest.raises(TypeError, match="numpy array"):
            w.write([1, 2, 3])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="one-dimensional"):
            w.write(np.zeros((2, 2), REC))
        w.write(make(0, 8)[::2])  # non-contiguous but right dtype: copied, accepted
        assert ring.publish_cursor == 4
        w.close()
    finally:
        ring.destroy()


def test_second_writer_refused_in_process(instance: str) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 16)
    other = BroadcastRing.attach(instance, "r", REC)
    try:
        w = ring.writer("block")
        with pytest.raises(SegmentInUse, match=f"live writer \\(pid {os.getpid()}\\)"):
            other.writer("block")
        with pytest.raises(SegmentInUse, match="live writer"):
            ring.writer("block")  # same object, same process: still one writer
        w.close()
        other.writer("block").close()  # free again once closed
    finally:
        other.close()
        ring.destroy()


def test_negative_counts_are_refused(instance: str) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 16)
    try:
        w = ring.writer("block")
        w.write(make(0, 10))
        r = ring.reader("block", start="oldest")
        for call in (lambda: r.read(-3), lambda: w.claim(-1), lambda: w.publish(-2)):
            with pytest.raises(ValueError, match="cannot"):
                call()
        assert r.position == 0 and ring.publish_cursor == ring.claim_cursor == 10
        assert len(r.read(100)) == 10 and r.valid() and r.accepted == 10  # nothing re-read
        w.close()
    finally:
        ring.destroy()


class _RacyCursors:
    """Cursor words whose first load of ``publish`` runs ``hook`` right after it."""

    def __init__(self, words, hook) -> None:
        self.words = words
        self.hook = hook

    def __getitem__(self, i: int) -> int:
        value = self.words[i]
        if i == 16 and self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return value

    def __setitem__(self, i: int, value: int) -> None:
        self.words[i] = value


def test_reader_lapped_between_its_cursor_loads(instance: str) -> None:
    """The writer laps the ring several times between a reader's publish and claim loads.

    A reader preempted right there used to compute a negative run length and move its
    position backwards; it must jump to the oldest valid record instead.
    """
    ring = BroadcastRing.create(instance, "r", REC, 16)
    try:
        w = ring.writer("block")
        r = ring.reader("block", start=0)
        w.write(make(0, 40))  # r is 40 behind on a 16-slot ring: lapped
        r._c = _RacyCursors(r._c, lambda: w.write(make(40, 100)))
        view = r.read(8)
        seq0 = r.position - len(view)
        in_order, bad = check(view, seq0)
        assert len(view) > 0 and seq0 >= 140 - 16
        assert r.valid() and in_order and bad == 0
        errors, _ = drain(r, 140)
        assert errors == 0
        assert r.position == 140 and r.accepted + r.lost == 140
        r.close()
        w.close()
    finally:
        ring.destroy()


# -- across processes ---------------------------------------------------------------------


def test_writer_and_three_readers_five_million(instance: str, procs) -> None:
    total, cap = 5_000_000, 1 << 14
    ring = BroadcastRing.create(instance, "ticks", REC, cap)
    try:
        go = procs.event()
        readers = {"fast": (4096, 0.0), "odd": (1000, 0.0), "slow": (256, 0.002)}
        for tag, (max_batch, delay) in readers.items():
            procs.start(ring_reader, tag, instance, "ticks", total, max_batch, delay)
        procs.collect("ready", list(readers))
        writer = procs.start(ring_writer, "writer", instance, "ticks", total, 1000, 0.0, go)
        procs.expect("ready", "writer")
        go.set()
        wrote = procs.expect("done", "writer", timeout=120)
        got = procs.collect("done", list(readers), timeout=120)
        assert procs.join(writer) == 0
    finally:
        ring.destroy()

    assert wrote["written"] == wrote["end"] == total
    # the writer finished while the slow reader was still far behind: it never waited
    slow_slot = got["slow"]["slot"]
    assert wrote["readers"][slow_slot]["lag"] > 0
    for tag, res in got.items():
        assert res["position"] == total, tag
        assert res["accepted"] + res["lost"] == total, (tag, res)
        assert res["disorder"] == 0 and res["bad"] == 0 and res["gap_errors"] == 0, (tag, res)
        assert res["accepted"] > 0, (tag, res)
        assert (res["lost"] > 0) == (res["gaps"] > 0), (tag, res)
    assert got["slow"]["lost"] > 0 and got["slow"]["gaps"] > 0
    # what each reader counted is what the ring showed for its slot
    for res in got.values():
        assert wrote["readers"][res["slot"]]["lost"] <= res["lost"]


def test_reader_killed_mid_stream(instance: str, procs) -> None:
    total, cap = 1_000_000, 1 << 14
    ring = BroadcastRing.create(instance, "ticks", REC, cap)
    try:
        go = procs.event()
        victim = procs.start(ring_reader, "victim", instance, "ticks", total, 1024, 0, 50_000)
        for tag in ("a", "b"):
            procs.start(ring_reader, tag, instance, "ticks", total, 2048)
        ready = procs.collect("ready", ["victim", "a", "b"])
        procs.start(ring_writer, "writer", instance, "ticks", total, 500, 0.0005, go)
        procs.expect("ready", "writer")
        go.set()
        procs.expect("progress", "victim")
        procs.kill(victim)
        wrote = procs.expect("done", "writer", timeout=120)
        got = procs.collect("done", ["a", "b"], timeout=120)

        slot = ready["victim"]["slot"]
        dead = {e["slot"]: e for e in ring.readers()}[slot]
        assert not dead["alive"] and dead["pid"] == victim.pid
        # a successor takes the dead reader's slot over and resumes at its cursor
        successor = ring.reader("block", start="resume", slot=slot)
        assert successor.position == dead["cursor"] >= 50_000
        errors, _ = drain(successor, total)
        assert errors == 0
        # the successor keeps the slot's loss counters and adds its own to them
        assert successor.lost >= dead["lost"]
        assert successor.accepted + successor.lost - dead["lost"] == total - dead["cursor"]
        successor.close()
    finally:
        ring.destroy()

    assert dead["cursor"] < total  # it died mid-stream ...
    assert wrote["written"] == total  # ... and the writer went on
    for tag, res in got.items():
        assert res["position"] == total and res["accepted"] + res["lost"] == total, tag
        assert res["disorder"] == 0 and res["bad"] == 0 and res["gap_errors"] == 0, (tag, res)


def test_writer_killed_mid_batch(instance: str, procs) -> None:
    total, cap = 4_000_000, 1 << 14
    rng = random.Random(os.getpid())
    ring = BroadcastRing.create(instance, "ticks", REC, cap)
    try:
        procs.start(ring_reader, "steady", instance, "ticks", total, 4096)
        procs.start(ring_reader, "slow", instance, "ticks", total, 512, 0.0005)
        procs.collect("ready", ["steady", "slow"])
        mid_batch = 0
        for i in range(6):  # big batches, killed at random times
            writer = procs.start(
                ring_writer, f"w{i}", instance, "ticks", total, 2 * cap, 0.0, None, i % 2 == 1
            )
            procs.expect("ready", f"w{i}")
            procs.kill_after(writer, rng.uniform(0.01, 0.08))
            mid_batch += ring.claim_cursor > ring.publish_cursor
        # one more, killed for certain in the middle of a batch with junk in its slots
        torn = procs.start(ring_torn_writer, "torn", instance, "ticks", cap // 2)
        claimed = procs.expect("claimed", "torn")
        procs.kill(torn)
        assert ring.claim_cursor >= ring.publish_cursor + claimed["n"]  # claim never shrinks
        mid_batch += 1
        # a new writer attaches (the dead one's role is free) and finishes the stream
        last = procs.start(ring_writer, "last", instance, "ticks", total, 1000)
        wrote = procs.expect("done", "last", timeout=120)
        assert procs.join(last) == 0
        got = procs.collect("done", ["steady", "slow"], timeout=120)
    finally:
        ring.destroy()

    assert mid_batch >= 1 and wrote["end"] == total
    for tag, res in got.items():
        assert res["position"] == total and res["accepted"] + res["lost"] == total, tag
        assert res["disorder"] == 0 and res["bad"] == 0 and res["gap_errors"] == 0, (tag, res)
        assert res["accepted"] > 0


def test_roles_held_by_another_process(instance: str, procs) -> None:
    """A second live writer, reader of a taken slot, producer or consumer is refused."""
    ring = BroadcastRing.create(instance, "ticks", REC, 64)
    q = RecordQueue.create(instance, "q", REC, 64)
    try:
        holder = procs.start(hold_roles, "holder", instance, "ticks", "q", procs.event())
        pid = procs.expect("held", "holder")
        with pytest.raises(SegmentInUse, match=f"live writer \\(pid {pid}\\)"):
            ring.writer("block")
        with pytest.raises(SegmentInUse, match=f"reader slot 3 is held by pid {pid}"):
            ring.reader("block", slot=3)
        with pytest.raises(SegmentInUse, match=f"live producer \\(pid {pid}\\)"):
            q.producer("block")
        with pytest.raises(SegmentInUse, match=f"live consumer \\(pid {pid}\\)"):
            q.consumer("block")
        other = ring.reader("block")  # other slots are free
        assert other.slot != 3
        other.close()
        procs.kill(holder)
        # a dead holder's roles are free at once
        assert not {e["slot"]: e for e in ring.readers()}[3]["alive"]
        ring.writer("block").close()
        ring.reader("block", slot=3).close()
        q.producer("block").close()
        q.consumer("block").close()
    finally:
        q.destroy()
        ring.destroy()


def test_words_helper_matches_records() -> None:
    recs = make(5, 3)
    assert words(recs)[:, 0].tolist() == [5, 6, 7]
    assert check(recs, 5) == (True, 0)
    recs["w3"][1] ^= 1
    assert check(recs, 5) == (True, 1)
    assert check(recs, 4) == (False, 1)


def test_resume_after_a_reader_killed_holding_a_batch(instance: str, procs) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 16)
    try:
        w = ring.writer("block")
        go = procs.event()
        victim = procs.start(ring_batch_holder, "victim", instance, "r", 5, 8, go)
        assert procs.expect("ready", "victim") == 0
        w.write(make(0, 40))  # laps it: records 0..23 are gone before it reads
        go.set()
        held = procs.expect("holding", "victim")
        assert held == {"first": 24, "n": 8, "lost": 24}
        procs.kill(victim)  # killed before it validated (or used) its batch
        successor = ring.reader("block", start="resume", slot=5)
        assert successor.position == 24 and successor.lost == 24  # the batch comes again
        errors, accepted = drain(successor, 40)
        assert errors == 0 and accepted == 16 and successor.lost == 24
        assert {e["slot"]: e for e in ring.readers()}[5]["lost"] == 24
        successor.close()
        w.close()
    finally:
        ring.destroy()

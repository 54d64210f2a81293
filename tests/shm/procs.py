"""Child-process mains and record helpers for the shm tests.

Children are started with the spawn context (never fork: segments hold OFD locks that a
forked child would share), so every main here is a module-level function. Each takes
``out`` (a :class:`Reporter`, its own pipe back to the test) and ``tag`` first and reports
``(kind, tag, payload)`` tuples; an exception is reported as ``("error", tag, traceback)``.

Test records are 64 bytes: word 0 is the record's sequence number (its ring or queue
position) and words 1..7 are a splitmix64 hash of it, so a torn or misplaced record fails
:func:`check` and a record out of order fails the sequence comparison.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.shm import BroadcastRing, RecordQueue, SegmentInUse, Stats
from appliance.shm.segment import Segment
from appliance.shm.snapshot import SharedSnapshot
from appliance.shm.stats import SlotState

REC = np.dtype(
    {
        "names": ["seq", "w1", "w2", "w3", "w4", "w5", "w6", "w7"],
        "formats": ["<u8"] * 8,
        "offsets": list(range(0, 64, 8)),
        "itemsize": 64,
    }
)

_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LANES = np.arange(1, 8, dtype=np.uint64) * _G
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
JUNK = 0xDEADBEEFDEADBEEF


def payload(seq: np.ndarray) -> np.ndarray:
    """Words 1..7 of the records with these sequence numbers, shape (n, 7)."""
    z = seq[:, None] + _LANES
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def words(records: np.ndarray) -> np.ndarray:
    """The records as an (n, 8) array of uint64 words (a view)."""
    return records.view(np.uint64).reshape(-1, 8)


def fill(buf: np.ndarray, seq0: int) -> None:
    """Make ``buf`` the records ``seq0, seq0 + 1, ...``."""
    w = words(buf)
    seq = np.arange(seq0, seq0 + len(buf), dtype=np.uint64)
    w[:, 0] = seq
    w[:, 1:] = payload(seq)


def make(seq0: int, n: int) -> np.ndarray:
    buf = np.zeros(n, REC)
    fill(buf, seq0)
    return buf


def check(view: np.ndarray, seq0: int) -> tuple[bool, int]:
    """(records are seq0, seq0 + 1, ... in order, number of records failing the hash)."""
    if len(view) == 0:
        return True, 0
    w = words(view)
    seq = w[:, 0]
    in_order = np.array_equal(seq, np.arange(seq0, seq0 + len(view), dtype=np.uint64))
    bad = int(np.count_nonzero((w[:, 1:] != payload(seq)).any(axis=1)))
    return bool(in_order), bad


class Reporter:
    """A child's own report channel (one pipe per child).

    Not a shared multiprocessing.Queue: a child killed while its queue feeder thread held
    the queue's write lock would leave every other child unable to report.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def put(self, item: tuple[str, str, Any]) -> None:
        self.conn.send(item)


def child(fn: Callable[..., None]) -> Callable[..., None]:
    """Report a child's exception on its ``out`` queue before the process dies of it."""

    @functools.wraps(fn)
    def main(out: Any, tag: str, *args: Any) -> None:
        try:
            fn(out, tag, *args)
        except BaseException:
            out.put(("error", tag, traceback.format_exc()))
            raise

    return main


# -- BroadcastRing -----------------------------------------------------------------------------


@child
def ring_writer(
    out: Any,
    tag: str,
    instance: str,
    name: str,
    total: int,
    batch: int,
    pause: float = 0.0,
    go: Any = None,
    zero_copy: bool = False,
) -> None:
    """Write records ``publish_cursor .. total-1`` in batches, then report.

    ``zero_copy`` generates each batch straight into the ring (claim, fill, publish), so
    most of the writer's time is spent in the middle of a claimed, unpublished batch.
    """
    ring = BroadcastRing.attach(instance, name, REC)
    w = ring.writer("block")
    out.put(("ready", tag, os.getpid()))
    if go is not None:
        go.wait(60)
    seq = ring.publish_cursor
    buf = np.zeros(batch, REC)
    while seq < total:
        n = min(batch, total - seq)
        if zero_copy:
            view = w.claim(n)
            fill(view, seq)
            w.publish(len(view))
            n = len(view)
        else:
            fill(buf[:n], seq)
            w.write(buf[:n])
        seq += n
        if pause:
            time.sleep(pause)
    readers = {r["slot"]: r for r in ring.readers()}
    out.put(("done", tag, {"written": w.written, "end": ring.publish_cursor, "readers": readers}))
    w.close()
    ring.close()


@child
def ring_torn_writer(out: Any, tag: str, instance: str, name: str, n: int) -> None:
    """Claim ``n`` slots, scribble junk over them and hang there until killed.

    The junk keeps the seq of the record it overwrites (what a torn old record would look
    like to a reader), so a reader that accepted one would fail the hash, not the order.
    """
    ring = BroadcastRing.attach(instance, name, REC)
    w = ring.writer("block")
    view = w.claim(n)
    wv = words(view)
    wv[:, 1:] = np.uint64(JUNK)  # word 0 keeps the old record's seq
    out.put(("claimed", tag, {"pid": os.getpid(), "n": len(view)}))
    time.sleep(3600)


@child
def ring_reader(
    out: Any,
    tag: str,
    instance: str,
    name: str,
    total: int,
    max_batch: int,
    delay: float = 0.0,
    announce_at: int = 0,
    slot: int | None = None,
) -> None:
    """Read from position 0 until ``total``; check every accepted record; report counts."""
    ring = BroadcastRing.attach(instance, name, REC)
    r = ring.reader("block", start=0, slot=slot)
    out.put(("ready", tag, {"pid": os.getpid(), "slot": r.slot}))
    disorder = bad = gap_errors = batches = invalid = 0
    next_seq = 0  # record after the last accepted one
    lost_then = 0  # r.lost when the last batch was accepted
    announced = not announce_at
    deadline = time.monotonic() + 120
    while r.position < total and time.monotonic() < deadline:
        if r.available() <= 0 and not r.wait(timeout=1.0):
            continue
        view = r.read(max_batch)
        n = len(view)
        seq0 = r.position - n
        in_order, n_bad = check(view, seq0)  # use the view first...
        if r.valid():  # ...then learn whether it was intact while we used it
            if n:
                batches += 1
                disorder += not in_order
                bad += n_bad
                # records between the last accepted one and this batch: exactly the losses
                gap_errors += seq0 - next_seq != r.lost - lost_then
                next_seq = seq0 + n
                lost_then = r.lost
        else:
            invalid += 1
        if not announced and r.accepted >= announce_at:
            out.put(("progress", tag, r.accepted))
            announced = True
        if delay:
            time.sleep(delay)
    result = {
        "accepted": r.accepted,
        "lost": r.lost,
        "gaps": r.gaps,
        "position": r.position,
        "disorder": disorder,
        "bad": bad,
        "gap_errors": gap_errors,
        "batches": batches,
        "invalid": invalid,
        "slot": r.slot,
    }
    out.put(("done", tag, result))
    r.close()
    ring.close()


@child
def ring_batch_holder(
    out: Any, tag: str, instance: str, name: str, slot: int, batch: int, go: Any
) -> None:
    """Register a reader at the latest record; on ``go`` read one batch and hold it,
    never validated, until killed."""
    ring = BroadcastRing.attach(instance, name, REC)
    r = ring.reader("block", start="latest", slot=slot)
    out.put(("ready", tag, r.position))
    go.wait(60)
    view = r.read(batch)
    out.put(("holding", tag, {"first": int(view["seq"][0]), "n": len(view), "lost": r.lost}))
    time.sleep(3600)


@child
def ring_bursts(
    out: Any, tag: str, instance: str, name: str, bursts: int, seed: int, go: Any
) -> None:
    """Many bursts of 1-3 records with tiny random pauses (the lost-wake-up stress)."""
    ring = BroadcastRing.attach(instance, name, REC)
    w = ring.writer("block")
    sizes, pauses = _bursts(bursts, seed)
    buf = np.zeros(3, REC)
    seq = ring.publish_cursor
    out.put(("ready", tag, seq + sum(sizes)))
    go.wait(60)
    for k, pause in zip(sizes, pauses, strict=True):
        fill(buf[:k], seq)
        w.write(buf[:k])
        seq += k
        _pause(pause)
    out.put(("done", tag, seq))
    w.close()
    ring.close()


def _bursts(bursts: int, seed: int) -> tuple[list[int], list[float | None]]:
    """Burst sizes 1-3 and the pause after each: none, a bare yield, or up to 200 us."""
    rng = random.Random(seed)
    sizes = [rng.randint(1, 3) for _ in range(bursts)]
    pauses = [rng.choice([None, 0.0, rng.uniform(0, 200e-6)]) for _ in range(bursts)]
    return sizes, pauses


def _pause(pause: float | None) -> None:
    if pause is not None:
        time.sleep(pause)


# -- RecordQueue --------------------------------------------------------------------------


@child
def queue_producer(
    out: Any, tag: str, instance: str, name: str, total: int, batch: int, saw_full: Any
) -> None:
    """Push records 0..total-1; a short push counts as 'full' and is retried with a wait."""
    q = RecordQueue.attach(instance, name, REC)
    p = q.producer("block")
    out.put(("ready", tag, os.getpid()))
    buf = np.zeros(batch, REC)
    sent = p.next_seq
    full = stalls = 0
    while sent < total:
        n = min(batch, total - sent)
        fill(buf[:n], sent)
        k = p.push(buf[:n])
        if k < n:
            full += 1
            saw_full.set()
            got = p.push_wait(buf[k:n], timeout=5.0)
            stalls += got < n - k
            k += got
        sent += k  # whatever did not go is refilled from `sent` next time round
    out.put(("done", tag, {"sent": sent, "head": q.head, "full": full, "stalls": stalls}))
    p.close()
    q.close()


@child
def queue_consumer(
    out: Any, tag: str, instance: str, name: str, total: int, max_batch: int, go: Any
) -> None:
    """Consume from the tail until ``total`` records came; check order and hash."""
    q = RecordQueue.attach(instance, name, REC)
    c = q.consumer("block")
    out.put(("ready", tag, os.getpid()))
    if go is not None:
        go.wait(60)
    expected = q.tail
    disorder = bad = 0
    received = 0
    deadline = time.monotonic() + 120
    while received < total and time.monotonic() < deadline:
        if not c.wait(timeout=1.0):
            continue
        view = c.peek(max_batch)
        n = len(view)
        in_order, n_bad = check(view, expected)
        disorder += not in_order
        bad += n_bad
        c.advance(n)
        expected += n
        received += n
    result = {"received": received, "disorder": disorder, "bad": bad, "left": len(c)}
    out.put(("done", tag, result))
    c.close()
    q.close()


@child
def queue_peeker(out: Any, tag: str, instance: str, name: str, consume: int, peek: int) -> None:
    """Consume ``consume`` records, then peek at ``peek`` more without advancing; hang."""
    q = RecordQueue.attach(instance, name, REC)
    c = q.consumer("block")
    view = c.peek(consume)
    c.advance(len(view))
    held = c.peek(peek)
    info = {"pid": os.getpid(), "tail": q.tail, "first": int(held["seq"][0]), "n": len(held)}
    out.put(("peeking", tag, info))
    time.sleep(3600)


@child
def queue_bursts(
    out: Any, tag: str, instance: str, name: str, bursts: int, seed: int, go: Any
) -> None:
    """Bursts of 1-3 records into a tiny queue with push_wait; count the push_waits that
    gave up although there was room (a lost 'not full' wake-up)."""
    q = RecordQueue.attach(instance, name, REC)
    p = q.producer("block")
    sizes, pauses = _bursts(bursts, seed)
    buf = np.zeros(3, REC)
    seq = p.next_seq
    timeouts = 0
    out.put(("ready", tag, seq + sum(sizes)))
    go.wait(60)
    for k, pause in zip(sizes, pauses, strict=True):
        fill(buf[:k], seq)
        done = 0
        while done < k:  # a consumer starved for seconds is no lost wake-up: room there is
            got = p.push_wait(buf[done:k], timeout=2.0)
            timeouts += done + got < k and p.free() > 0
            done += got
        seq += k
        _pause(pause)
    out.put(("done", tag, {"sent": seq, "timeouts": timeouts}))
    p.close()
    q.close()


# -- holding things -----------------------------------------------------------------------


@child
def own_ring(out: Any, tag: str, instance: str, name: str, capacity: int, release: Any) -> None:
    """Create a ring and hold it until ``release`` is set (then destroy it) or death."""
    ring = BroadcastRing.create(instance, name, REC, capacity)
    out.put(("created", tag, os.getpid()))
    release.wait(120)
    ring.destroy()
    out.put(("destroyed", tag, os.getpid()))


def race_segment(name: str) -> Segment:
    """The segment the starters in :func:`starter` race for (the test makes it too)."""
    return Segment.create(name, kind="race", dtype=REC, capacity=1, data_size=64)


@child
def starter(out: Any, tag: str, name: str, trials: int, barrier: Any) -> None:
    """Once per trial, race the other starters to create ``name`` over a stale segment.

    Reports ("owner", inode of the file it holds), ("in use", message) or ("error", what
    else escaped); an owner holds the segment until the test has looked, then removes it.
    """
    for trial in range(trials):
        barrier.wait(60)  # the test has left a stale segment under the name
        seg = None
        try:
            seg = race_segment(name)
            result = ("owner", os.fstat(seg.fd).st_ino)
        except SegmentInUse as exc:
            result = ("in use", str(exc))
        except Exception as exc:  # what the test is looking for: nothing else may escape
            result = ("error", f"{type(exc).__name__}: {exc}")
        out.put(("trial", tag, (trial, result)))
        barrier.wait(60)  # the test has checked the name
        if seg is not None:
            seg.unlink()
            seg.close()
        barrier.wait(60)  # every owner has let go


@child
def hold_roles(
    out: Any, tag: str, instance: str, ring_name: str, queue_name: str, release: Any
) -> None:
    """Hold the ring's writer and reader slot 3, the queue's producer and consumer."""
    ring = BroadcastRing.attach(instance, ring_name, REC)
    q = RecordQueue.attach(instance, queue_name, REC)
    w = ring.writer("block")
    r = ring.reader("block", slot=3)
    p = q.producer("block")
    c = q.consumer("block")
    out.put(("held", tag, os.getpid()))
    release.wait(120)
    for role in (w, r, p, c):
        role.close()
    ring.close()
    q.close()
    out.put(("released", tag, os.getpid()))


@child
def snapshot_writer(
    out: Any, tag: str, instance: str, name: str, shape: tuple[int, ...], release: Any
) -> None:
    """Write a snapshot full of 7.0 and stay its writer until ``release``."""
    snap = SharedSnapshot.attach(instance, name, np.dtype("<f8"), shape)
    snap.write(np.full(shape, 7.0))
    out.put(("wrote", tag, os.getpid()))
    release.wait(120)
    snap.close()


# -- Stats --------------------------------------------------------------------------------


@child
def stats_writer(out: Any, tag: str, instance: str, name: str, slot: int, stop: Any) -> None:
    """Hold a stats slot: bump counters, observe latencies and beat until ``stop``."""
    stats = Stats.attach(instance, name)
    s = stats.slot(slot, "tester", f"writer-{tag}")
    s.state(SlotState.RUNNING)
    events, nbytes = s.counter("events"), s.counter("bytes")
    out.put(("ready", tag, {"pid": os.getpid(), "events": s.get(events)}))
    i = 0
    while not stop.is_set():
        for _ in range(100):
            s.add(events)
            s.add(nbytes, 64)
            s.observe(i % 100_000)
            i += 1
        s.observe_many(np.arange(i % 1000, i % 1000 + 50))
        s.beat()
        time.sleep(0.0005)
    s.close()
    stats.close()
    out.put(("stopped", tag, i))


def shm_fds() -> list[str]:
    """This process's descriptors of files in /dev/shm (what a leak of a segment holds;
    other descriptors come and go with whatever else runs in the test process)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed between the listing and the look
            if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/shm/"):
                out.append(fd)
    return sorted(out)

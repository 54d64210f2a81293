"""Stats: one writer per slot, readers anywhere, values that only grow, restarts counted."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from appliance.shm import SegmentInUse, Stats, percentile
from appliance.shm.stats import BUCKETS, MAX_COUNTERS
from tests.shm.procs import stats_writer


def _watch(stats: Stats, slot: int, until_events: int, last: dict | None) -> tuple[dict, int]:
    """Snapshot ``slot`` until its events counter reaches ``until_events``.

    Returns the last snapshot and how many times any value was seen going backwards.
    """
    backwards = 0
    deadline = time.monotonic() + 60
    snaps = 0
    while True:
        s = next(e for e in stats.snapshot() if e["slot"] == slot)
        if last is not None:
            backwards += s["counters"]["events"] < last["counters"]["events"]
            backwards += s["counters"]["bytes"] < last["counters"]["bytes"]
            backwards += s["heartbeat_ns"] < last["heartbeat_ns"]
            backwards += int(np.count_nonzero(s["histogram"] < last["histogram"]))
        last = s
        snaps += 1
        if (s["counters"]["events"] >= until_events and snaps >= 50) or (
            time.monotonic() > deadline
        ):
            return s, backwards
        time.sleep(0.0002)


def test_stats_across_processes_and_restarts(instance: str, procs) -> None:
    stats = Stats.create(instance, "stats", slots=4, counters=["events", "bytes"])
    try:
        stop = procs.event()
        first = procs.start(stats_writer, "first", instance, "stats", 0, stop)
        info = procs.expect("ready", "first")
        assert info["events"] == 0
        with pytest.raises(SegmentInUse, match=f"slot 0 is held by live pid {first.pid}"):
            stats.slot(0, "intruder", "x")
        s, backwards = _watch(stats, 0, 20_000, None)
        assert backwards == 0
        assert s["alive"] and s["pid"] == first.pid and s["incarnation"] == 1
        assert s["state"] == "running" and s["role"] == "tester" and s["name"] == "writer-first"
        assert s["histogram"].sum() > 0

        procs.kill(first)
        dead = next(e for e in stats.snapshot() if e["slot"] == 0)
        assert not dead["alive"] and not stats.alive(0) and dead["pid"] == first.pid
        at_death = dead["counters"]["events"]

        stop2 = procs.event()
        second = procs.start(stats_writer, "second", instance, "stats", 0, stop2)
        info = procs.expect("ready", "second")
        assert info["events"] == at_death  # the successor continues the counters
        s, backwards = _watch(stats, 0, at_death + 20_000, dead)
        assert backwards == 0
        assert s["incarnation"] == 2 and s["pid"] == second.pid and s["alive"]

        stop2.set()
        procs.expect("stopped", "second")
        assert procs.join(second) == 0
        done = next(e for e in stats.snapshot() if e["slot"] == 0)
        assert done["state"] == "stopped" and not done["alive"]
        mine = stats.slot(0, "tester", "third")  # a cleanly closed slot is free too
        assert next(e for e in stats.snapshot() if e["slot"] == 0)["incarnation"] == 3
        assert mine.get(mine.counter("events")) == done["counters"]["events"]
        mine.close()
    finally:
        stats.destroy()


def test_stats_in_process(instance: str) -> None:
    with pytest.raises(ValueError, match="at most"):
        Stats.create(instance, "s", 2, [f"c{i}" for i in range(MAX_COUNTERS + 1)])
    with pytest.raises(ValueError, match="repeat"):
        Stats.create(instance, "s", 2, ["a", "a"])
    stats = Stats.create(instance, "s", slots=2, counters=["a", "b"])
    try:
        assert stats.snapshot() == []  # unused slots are not reported
        with pytest.raises(IndexError):
            stats.slot(2, "r", "n")
        s = stats.slot(1, "role", "name", core=1)
        with pytest.raises(SegmentInUse, match="slot 1"):
            stats.slot(1, "role", "again")  # one writer per slot, even in one process
        with pytest.raises(KeyError, match="no counter 'c'"):
            s.counter("c")
        a = s.counter("a")
        s.add(a, 5)
        s.set(s.counter("b"), 7)
        values = [0, 1, 2, 3, 1000, 10**6, 2**40]
        for v in values:
            s.observe(v)
        s.observe_many(np.array(values))
        other = Stats.attach(instance, "s")
        (snap,) = other.snapshot()
        other.close()
        assert snap["counters"] == {"a": 5, "b": 7} and snap["core"] == 1
        hist = snap["histogram"]
        assert hist.sum() == 2 * len(values) and len(hist) == BUCKETS
        for v in values:  # both paths put a value in the bucket of its bit length
            assert hist[v.bit_length()] >= 2
        assert percentile(hist, 50) == (1 << 2) - 1
        assert percentile(hist, 100) == (1 << 41) - 1
        assert math.isnan(percentile(np.zeros(BUCKETS, np.uint64), 50))
        s.close()
    finally:
        stats.destroy()

"""Wait strategies: what ``auto`` resolves to, and no lost wake-ups with ``block``."""

from __future__ import annotations

import os
import random
import time

import pytest

from appliance.shm import BroadcastRing, RecordQueue, WaitStrategy, resolve
from appliance.shm.wait import wait_until
from tests.shm.procs import REC, check, make, queue_bursts, ring_bursts

BURSTS = 3000
TIMEOUT = 5.0  # generous: a lost wake-up shows up as a wait that runs this out


def test_resolve_concrete_strategies_pass_through() -> None:
    for name in ("spin", "yield", "block"):
        for spinners, cores in ((1, 1), (1, 64), (64, 2)):
            assert resolve(name, spinners, cores) is WaitStrategy(name)
            assert resolve(WaitStrategy(name), spinners, cores) is WaitStrategy(name)
    with pytest.raises(ValueError):
        resolve("sleepy", 1, 2)


def test_resolve_auto_spins_only_with_a_core_each_and_one_spare() -> None:
    block, spin = WaitStrategy.BLOCK, WaitStrategy.SPIN
    # a 2-core appliance runs several loop processes: auto never spins there
    assert resolve("auto", 2, 2) is block
    assert resolve("auto", 4, 2) is block
    assert resolve(WaitStrategy.AUTO, 3, 2) is block
    assert resolve("auto", 1, 1) is block  # the only core must stay usable
    # one core is kept for the supervisor and the OS
    assert resolve("auto", 1, 2) is spin
    assert resolve("auto", 7, 8) is spin
    assert resolve("auto", 8, 8) is block
    assert resolve("auto", 3, 16) is spin


def test_wait_until_each_strategy(instance: str) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 16)
    try:
        w = ring.writer("block")
        for strategy in ("spin", "yield", "block"):
            r = ring.reader(strategy)
            assert not r.wait(timeout=0.01)  # nothing comes: times out, never hangs
            w.write(make(ring.publish_cursor, 1))
            assert r.wait(timeout=0.01) and r.wait(timeout=None)
            r.close()
        assert wait_until(lambda: True, WaitStrategy.BLOCK, None, None)
        with pytest.raises(ValueError, match="needs a doorbell"):
            wait_until(lambda: False, WaitStrategy.BLOCK, None, 0.01)
        w.close()
    finally:
        ring.destroy()


def _timed_wait(wait, available) -> tuple[bool, bool]:
    """(the wait ran out its timeout, it did so although records were there)."""
    t0 = time.monotonic()
    ok = wait(timeout=TIMEOUT)
    if time.monotonic() - t0 < TIMEOUT:
        return False, False
    return True, ok or available() > 0


def test_block_ring_no_lost_wakeup(instance: str, procs) -> None:
    ring = BroadcastRing.create(instance, "r", REC, 1 << 14)  # more than all bursts: no laps
    try:
        r = ring.reader("block", start=0)
        sleeps = 0
        sleep_until = r._doorbell.sleep_until

        def counting_sleep(ready, deadline):  # count the waits that reached the semaphore
            nonlocal sleeps
            sleeps += 1
            return sleep_until(ready, deadline)

        r._doorbell.sleep_until = counting_sleep
        go = procs.event()
        procs.start(ring_bursts, "writer", instance, "r", BURSTS, os.getpid(), go)
        total = procs.expect("ready", "writer")
        go.set()
        timed_out = lost_wakeups = errors = 0
        while r.position < total and timed_out < 3:
            if r.available() <= 0:
                t, lost = _timed_wait(r.wait, r.available)
                timed_out += t
                lost_wakeups += lost
                continue
            view = r.read(64)
            in_order, bad = check(view, r.position - len(view))
            errors += not (r.valid() and in_order and bad == 0)
        assert procs.expect("done", "writer") == total
        assert lost_wakeups == 0  # a wait that ran out with nothing there: a starved writer
        assert errors == 0 and r.accepted == total and r.lost == 0
        assert sleeps > 0  # the stress did exercise the semaphore path
        r.close()
    finally:
        ring.destroy()


def test_block_queue_no_lost_wakeup(instance: str, procs) -> None:
    q = RecordQueue.create(instance, "q", REC, 4)  # tiny: the producer waits for room too
    try:
        c = q.consumer("block")
        go = procs.event()
        procs.start(queue_bursts, "producer", instance, "q", BURSTS, os.getpid(), go)
        total = procs.expect("ready", "producer")
        go.set()
        rng = random.Random(os.getpid())
        received = timed_out = lost_wakeups = errors = 0
        while received < total and timed_out < 3:
            if not len(c):
                t, lost = _timed_wait(c.wait, c.__len__)
                timed_out += t
                lost_wakeups += lost
                continue
            out = c.pop(rng.randint(1, 3))
            errors += check(out, received) != (True, 0)
            received += len(out)
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 100e-6))  # let the producer find the queue full
        sent = procs.expect("done", "producer")
        assert sent["timeouts"] == 0  # no lost 'not full' wake-up on the producer side
        assert lost_wakeups == 0
        assert errors == 0 and received == sent["sent"] == total
        c.close()
    finally:
        q.destroy()


def test_a_signal_during_a_block_wait_returns_instead_of_raising(instance):
    import signal

    from appliance.model.records import TICK
    from appliance.shm import BroadcastRing

    ring = BroadcastRing.create(instance, "sig", TICK, 16)
    reader = ring.reader("block")
    old = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        # No timeout: only the signal can end this wait (pytest-timeout guards a hang).
        assert reader.wait(None) is False
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        reader.close()
        ring.destroy()

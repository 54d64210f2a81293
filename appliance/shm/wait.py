"""Wait strategies: how a reader waits for a cursor to move.

* ``spin``: re-check in a tight loop. Lowest latency; burns a whole core.
* ``yield``: re-check, calling ``sched_yield`` in between. Gives the core to whoever
  else is runnable, still never sleeps.
* ``block``: spin for a few checks, then sleep on a named POSIX semaphore that the
  writer posts. No lost wake-ups: the sleeper stores its flag, fences, re-checks the
  condition and only then sleeps; the writer stores its cursor, fences and then reads the
  flag (a Dekker handshake: with both fences, at least one side sees the other's store).
* ``auto``: ``spin`` when every spinning process has a core of its own, else ``block``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from enum import StrEnum

import posix_ipc

from appliance.shm.ordering import full_fence
from appliance.shm.semaphore import unlink_semaphore


class WaitStrategy(StrEnum):
    SPIN = "spin"
    YIELD = "yield"
    BLOCK = "block"
    AUTO = "auto"


def resolve(strategy: str | WaitStrategy, spinners: int, cores: int) -> WaitStrategy:
    """Turn ``auto`` into a concrete strategy for ``spinners`` processes on ``cores`` cores.

    A spinner sharing a core with another runnable process spends its time slice spinning
    while the process it waits for cannot run, so ``auto`` spins only with spare cores:
    one core is kept for the supervisor and the operating system.
    """
    strategy = WaitStrategy(strategy)
    if strategy is not WaitStrategy.AUTO:
        return strategy
    return WaitStrategy.SPIN if spinners <= cores - 1 else WaitStrategy.BLOCK


# Checks made before a block-strategy waiter goes to sleep: a short spin catches a cursor
# that is about to move without paying two system calls.
BLOCK_SPIN_CHECKS = 64


class Doorbell:
    """A sleeper's flag word in shared memory plus the named semaphore that wakes it.

    One doorbell has one sleeper (single-consumer semaphore), which is what makes "post
    only when the count is zero" safe: a pending post is always for this sleeper.
    """

    def __init__(self, flag: memoryview, sem: posix_ipc.Semaphore, inode: int) -> None:
        self._flag = flag  # memoryview cast 'q' of one word
        self._sem = sem
        self._inode = inode
        self.sem_name = sem.name

    def ring(self) -> None:
        """Writer side, after publishing: wake the sleeper if it is (about to be) asleep."""
        full_fence()
        if self._flag[0] and self._sem.value == 0:
            self._sem.release()

    def sleeping(self) -> bool:
        """Flag check without a fence, for writers that ring many doorbells."""
        return bool(self._flag[0])

    def wake(self) -> None:
        """Post unconditionally-when-empty; the caller has already fenced and checked."""
        if self._sem.value == 0:
            self._sem.release()

    def sleep_until(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Sleeper side: block until ``ready()`` or the monotonic ``deadline``."""
        while True:
            self._flag[0] = 1
            full_fence()
            if ready():
                self._flag[0] = 0
                return True
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self._sem.acquire(timeout)
            except (posix_ipc.BusyError, posix_ipc.SignalError):
                # Timed out, or a signal (e.g. SIGTERM) interrupted the wait: the caller's
                # loop looks at its stop flag, so return rather than raise.
                self._flag[0] = 0
                return ready()
            self._flag[0] = 0
            if ready():
                return True

    def close(self) -> None:
        self._sem.close()

    def unlink(self) -> str | None:
        """Remove the semaphore if it is still ours; else the problem, for the caller."""
        return unlink_semaphore(self.sem_name, self._inode)


def wait_until(
    ready: Callable[[], bool],
    strategy: WaitStrategy,
    doorbell: Doorbell | None,
    timeout: float | None,
) -> bool:
    """Wait with ``strategy`` until ``ready()`` is true or ``timeout`` seconds pass."""
    if ready():
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    if strategy is WaitStrategy.BLOCK:
        if doorbell is None:
            raise ValueError("the block strategy needs a doorbell")
        for _ in range(BLOCK_SPIN_CHECKS):
            if ready():
                return True
        return doorbell.sleep_until(ready, deadline)
    pause = os.sched_yield if strategy is WaitStrategy.YIELD else _no_pause
    while True:
        for _ in range(256):  # check the clock only now and then
            if ready():
                return True
            pause()
        if deadline is not None and time.monotonic() >= deadline:
            return ready()


def _no_pause() -> None:
    pass

"""RecordQueue: a lock-free single-producer single-consumer queue of fixed-size records.

Layout of the data area::

    0      head  (int64, own 128-byte line)  records ever pushed; written by the producer
    128    tail  (int64, own line)           records ever consumed; written by the consumer
    256    consumer-sleeps flag (own line)   block strategy handshake
    384    producer-sleeps flag (own line)
    512    producer pid, consumer pid        informational
    4096   records (capacity, a power of two)

The producer writes payload then stores ``head``; the consumer loads ``head``, uses a
zero-copy view of the records and only then stores ``tail`` (loads are not reordered with
later stores on x86-64, so the producer never overwrites a record still being read).
Because ``tail`` moves only after the consumer has processed a batch, a consumer killed
mid-batch leaves its records in the queue for the next consumer: delivery is at least
once, and consumers make it exactly once by recognising records they already handled
(records carry their queue position when the producer stamps ``seq_field``).

A full queue is an answer, not a wait: :meth:`QueueProducer.push` returns how many
records it took. :meth:`QueueProducer.push_wait` waits for room, but only up to a timeout.
Many-to-one is one queue per producer, polled by the consumer: without compare-and-swap
in Python there is no safe multi-producer queue, and this is Disruptor's single-writer
principle anyway.
"""

from __future__ import annotations

import os
import time

import numpy as np

from appliance.shm.errors import SegmentInUse
from appliance.shm.locks import is_locked
from appliance.shm.ordering import full_fence
from appliance.shm.segment import Segment
from appliance.shm.slots import Slots, SlotSegment, check_records
from appliance.shm.wait import Doorbell, WaitStrategy, wait_until

KIND = "recordqueue"
HEAD, TAIL, CONSUMER_SLEEPS, PRODUCER_SLEEPS, PIDS, RECORDS = 0, 128, 256, 384, 512, 4096
PRODUCER_LOCK_BYTE, CONSUMER_LOCK_BYTE = 1, 2


class RecordQueue(SlotSegment):
    """An SPSC queue in a named segment. Create once (owner), attach elsewhere."""

    KIND = KIND
    RECORDS = RECORDS
    SEMAPHORES = ("c", "p")  # the consumer's doorbell, then the producer's

    def __init__(self, segment: Segment, dtype: np.dtype) -> None:
        super().__init__(segment, dtype)
        self._head = segment.words(HEAD)
        self._tail = segment.words(TAIL)
        self._pids = segment.words(PIDS, 2)

    def _sleeper_flags(self) -> list[memoryview]:
        return [self.segment.words(CONSUMER_SLEEPS), self.segment.words(PRODUCER_SLEEPS)]

    @property
    def not_empty(self) -> Doorbell:
        """Rung by the producer; the consumer sleeps on it."""
        return self._doorbells[0]

    @property
    def not_full(self) -> Doorbell:
        """Rung by the consumer; the producer sleeps on it."""
        return self._doorbells[1]

    @property
    def head(self) -> int:
        return self._head[0]

    @property
    def tail(self) -> int:
        return self._tail[0]

    def __len__(self) -> int:
        return self._head[0] - self._tail[0]

    def unconsumed(self) -> np.ndarray:
        """A copy of the records published and not consumed, oldest first: what an owner
        takes stock of once the queue's producer and consumer are gone."""
        tail, head = int(self._tail[0]), int(self._head[0])
        return self.records[np.arange(tail, head) & self.mask]  # fancy indexing copies

    def role_holders(self) -> list[tuple[str, int]]:
        """(role, pid) of each role a live process holds (works read-only)."""
        fd = self.segment.fd
        return [
            (role, int(self._pids[i]))
            for role, byte, i in (
                ("producer", PRODUCER_LOCK_BYTE, 0),
                ("consumer", CONSUMER_LOCK_BYTE, 1),
            )
            if is_locked(fd, byte)
        ]

    def producer(
        self, strategy: WaitStrategy | str = WaitStrategy.BLOCK, seq_field: str | None = None
    ) -> QueueProducer:
        return QueueProducer(self, WaitStrategy(strategy), seq_field)

    def consumer(self, strategy: WaitStrategy | str = WaitStrategy.BLOCK) -> QueueConsumer:
        return QueueConsumer(self, WaitStrategy(strategy))

    def _take_role(self, byte: int, role: str, pid_index: int) -> None:
        if not self._take(byte):
            raise SegmentInUse(
                f"queue {self.segment.name} already has a live {role} (pid {self._pids[pid_index]})"
            )
        self._pids[pid_index] = os.getpid()

    def _give_role(self, byte: int, pid_index: int) -> None:
        self._pids[pid_index] = 0
        self._give(byte)


class QueueProducer:
    """The queue's only producer. Continues from ``head`` after a predecessor died."""

    def __init__(self, queue: RecordQueue, strategy: WaitStrategy, seq_field: str | None) -> None:
        queue._take_role(PRODUCER_LOCK_BYTE, "producer", 0)
        self.queue = queue
        self.strategy = strategy
        self._head = queue._head
        self._tail = queue._tail
        self._cap = queue.capacity
        self._slots = Slots(queue.records, seq_field)
        self._dtype = queue.dtype
        self._bell = queue.not_empty

    @property
    def next_seq(self) -> int:
        """The queue position the next pushed record will get."""
        return self._head[0]

    def free(self) -> int:
        return self._cap - (self._head[0] - self._tail[0])

    def push(self, records: np.ndarray) -> int:
        """Append as many of ``records`` as fit; returns that count (0: the queue is full)."""
        try:
            fast = records.dtype is self._dtype and records.ndim == 1 and records.flags.c_contiguous
        except AttributeError:  # not an array: check_records raises the TypeError
            fast = False
        if not fast:
            records = check_records(records, self._dtype, f"queue {self.queue.segment.name}")
        head = self._head[0]
        n = min(len(records), self._cap - (head - self._tail[0]))
        if n <= 0:
            return 0
        self._slots.copy_in(head, records, 0, n)
        self._head[0] = head + n  # publish after the payload
        full_fence()
        if self._bell.sleeping():
            self._bell.wake()
        return n

    def push_wait(self, records: np.ndarray, timeout: float) -> int:
        """Push all of ``records``, waiting for room at most ``timeout`` seconds in all.

        Returns how many were pushed; fewer than ``len(records)`` means the queue stayed
        full for the whole timeout, and the caller decides what that means.
        """
        done = self.push(records)
        deadline = time.monotonic() + timeout
        while done < len(records):
            left = deadline - time.monotonic()
            if left <= 0 or not wait_until(
                lambda: self.free() > 0, self.strategy, self.queue.not_full, left
            ):
                break
            done += self.push(records[done:])
        return done

    def close(self) -> None:
        self.queue._give_role(PRODUCER_LOCK_BYTE, 0)


class QueueConsumer:
    """The queue's only consumer. Resumes at ``tail``: unconsumed records survive it."""

    def __init__(self, queue: RecordQueue, strategy: WaitStrategy) -> None:
        queue._take_role(CONSUMER_LOCK_BYTE, "consumer", 1)
        self.queue = queue
        self.strategy = strategy
        self._head = queue._head
        self._tail = queue._tail
        self._slots = Slots(queue.records)
        self._bell = queue.not_full

    def __len__(self) -> int:
        return self._head[0] - self._tail[0]

    def peek(self, max_records: int) -> np.ndarray:
        """Zero-copy view of up to ``max_records`` records at the tail (contiguous run).

        The records stay in the queue until :meth:`advance`: process first, then advance.
        """
        if max_records < 0:
            raise ValueError(f"cannot peek at {max_records} records")
        tail = self._tail[0]
        return self._slots.run(tail, min(self._head[0] - tail, max_records))

    def advance(self, n: int) -> None:
        """Release ``n`` records after processing them."""
        if n < 0:
            raise ValueError(f"cannot advance by {n} records")
        tail = self._tail[0]
        if n > self._head[0] - tail:
            raise ValueError(f"advancing {n} records but only {self._head[0] - tail} are queued")
        self._tail[0] = tail + n
        full_fence()
        if self._bell.sleeping():
            self._bell.wake()

    def pop(self, max_records: int) -> np.ndarray:
        """Copy out and release up to ``max_records`` records (the tail run, contiguous)."""
        view = self.peek(max_records)
        out = view.copy()
        self.advance(len(out))
        return out

    def wait(self, timeout: float | None = None) -> bool:
        """Wait with this consumer's strategy until the queue holds a record."""
        head, tail = self._head, self._tail
        return wait_until(lambda: head[0] > tail[0], self.strategy, self.queue.not_empty, timeout)

    def close(self) -> None:
        self.queue._give_role(CONSUMER_LOCK_BYTE, 1)

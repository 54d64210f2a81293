"""BroadcastRing: a one-writer, many-reader broadcast ring of fixed-size records.

Layout of the data area (offsets from the end of the segment header)::

    0      claim cursor    (int64, own 128-byte line)  written by the writer
    128    publish cursor  (int64, own 128-byte line)  written by the writer
    256    writer pid      (int64, own line)
    384    sleeper flags   (one int64 per reader slot, one line for 16 slots)
    512+   reader slots    (128 bytes each: cursor, lost, pid, registered_ns, gaps)
    4096k  records         (capacity records, capacity a power of two)

Cursors are sequence numbers: record ``s`` lives in slot ``s & (capacity - 1)``. To write
``n`` records the writer stores ``claim = publish + n``, copies the payload, then stores
``publish += n`` (see :mod:`appliance.shm.ordering` for why that order is enough). The
writer never waits for readers.

A reader loads ``publish``, takes a zero-copy view of records it has not read yet and,
after using it, loads ``claim``: record ``s`` is intact as long as ``claim <= s +
capacity`` (the writer has not begun to reuse its slot), so if the oldest record of the
batch passes, the whole batch does. Otherwise the batch is discarded and counted as lost.
This is a seqlock over the whole ring. A reader more than ``capacity`` behind jumps to
the oldest record still valid (``claim - capacity``) and counts exactly what it skipped.

Single writer and slot ownership are enforced with OFD locks (see segment.py): a writer
or reader slot held by a process that died is free again the moment it dies.
"""

from __future__ import annotations

import os
import time
from typing import Literal

import numpy as np

from appliance.shm.errors import SegmentInUse
from appliance.shm.locks import is_locked
from appliance.shm.ordering import full_fence
from appliance.shm.segment import LINE, Segment
from appliance.shm.slots import Slots, SlotSegment, check_records
from appliance.shm.wait import WaitStrategy, wait_until

KIND = "broadcast_ring"
CLAIM, PUBLISH, WRITER, SLEEPERS, SLOTS = 0, 128, 256, 384, 512
MAX_READERS = 16
WRITER_LOCK_BYTE = 1
READER_LOCK_BYTE0 = 2
# words in a reader slot
R_CURSOR, R_LOST, R_PID, R_REGISTERED, R_GAPS = range(5)
RECORDS = 4096
_NO_SLEEPERS = bytes(8 * MAX_READERS)

Start = Literal["latest", "oldest", "resume"] | int


class BroadcastRing(SlotSegment):
    """A broadcast ring in a named segment. Create it once (owner), attach elsewhere."""

    KIND = KIND
    RECORDS = RECORDS
    META = {"max_readers": MAX_READERS}
    SEMAPHORES = tuple(f"r{i}" for i in range(MAX_READERS))

    def __init__(self, segment: Segment, dtype: np.dtype) -> None:
        super().__init__(segment, dtype)
        self._cursors = segment.words(0, 2 * LINE // 8)  # claim at [0], publish at [16]
        self._sleepers = segment.words(SLEEPERS, MAX_READERS)
        self._sleeper_bytes = segment.region(SLEEPERS, 8 * MAX_READERS)
        self._slots = segment.words(SLOTS, MAX_READERS * LINE // 8)
        self._writer_pid = segment.words(WRITER)

    def _sleeper_flags(self) -> list[memoryview]:
        return [self._sleepers[i : i + 1] for i in range(MAX_READERS)]

    # -- cursors and introspection ------------------------------------------------------

    @property
    def claim_cursor(self) -> int:
        return self._cursors[0]

    @property
    def publish_cursor(self) -> int:
        return self._cursors[16]

    def readers(self) -> list[dict[str, int]]:
        """Registered reader slots with their lag behind the publish cursor."""
        pub = self.publish_cursor
        out = []
        for i in range(MAX_READERS):
            base = i * LINE // 8
            if self._slots[base + R_REGISTERED]:
                cursor = self._slots[base + R_CURSOR]
                byte = READER_LOCK_BYTE0 + i
                out.append(
                    {
                        "slot": i,
                        "pid": self._slots[base + R_PID],
                        "alive": byte in self._held or is_locked(self.segment.fd, byte),
                        "cursor": cursor,
                        "lag": pub - cursor,
                        "lost": self._slots[base + R_LOST],
                        "gaps": self._slots[base + R_GAPS],
                    }
                )
        return out

    def writer(
        self, strategy: WaitStrategy | str = WaitStrategy.BLOCK, seq_field: str | None = None
    ) -> RingWriter:
        return RingWriter(self, WaitStrategy(strategy), seq_field)

    def reader(
        self,
        strategy: WaitStrategy | str = WaitStrategy.BLOCK,
        start: Start = "latest",
        slot: int | None = None,
    ) -> RingReader:
        return RingReader(self, WaitStrategy(strategy), start, slot)


class RingWriter:
    """The ring's single writer. A second live writer is refused."""

    def __init__(self, ring: BroadcastRing, strategy: WaitStrategy, seq_field: str | None) -> None:
        if not ring._take(WRITER_LOCK_BYTE):
            raise SegmentInUse(
                f"ring {ring.segment.name} already has a live writer (pid {ring._writer_pid[0]})"
            )
        self.ring = ring
        self._c = ring._cursors
        self._slots = Slots(ring.records, seq_field)
        self._cap = ring.capacity
        self._dtype = ring.dtype
        # claim only ever grows, even past a batch a dead writer claimed but never
        # published: readers validate against the highest slot anyone began to overwrite.
        self._claim = self._c[0]
        ring._writer_pid[0] = os.getpid()
        self.written = 0

    def write(self, records: np.ndarray) -> int:
        """Publish ``records`` (any length; long batches go in capacity-sized chunks)."""
        try:
            fast = records.dtype is self._dtype and records.ndim == 1 and records.flags.c_contiguous
        except AttributeError:  # not an array: check_records raises the TypeError
            fast = False
        if not fast:
            records = check_records(records, self._dtype, f"ring {self.ring.segment.name}")
        n = len(records)
        if 0 < n <= self._cap:  # the usual case, without the chunk loop's cost (batch 1)
            pub = self._begin(n)
            self._slots.copy_in(pub, records, 0, n)
            self._end(pub, n)
            return n
        for done in range(0, n, self._cap):
            k = min(self._cap, n - done)
            pub = self._begin(k)
            self._slots.copy_in(pub, records, done, k)  # 2. payload (and seq stamps)
            self._end(pub, k)
        return n

    def _begin(self, n: int) -> int:
        """1. Advance the claim cursor over the ``n`` slots about to be overwritten."""
        pub = self._c[16]
        if pub + n > self._claim:
            self._claim = pub + n
        self._c[0] = self._claim
        return pub

    def _end(self, pub: int, n: int) -> None:
        """3. After the payload: publish, then wake sleepers."""
        self._c[16] = pub + n
        self.written += n
        self._wake()

    def claim(self, n: int) -> np.ndarray:
        """Zero-copy: a writable view of the next ``min(n, contiguous room)`` slots.

        Fill it, then call :meth:`publish` with the number of records filled. Lets a
        producer generate records straight into the ring without an intermediate array.
        """
        if n < 0:
            raise ValueError(f"cannot claim {n} records")
        pub = self._c[16]
        n = min(n, self._cap - (pub & self.ring.mask))  # the room run() gives, sans a view
        return self._slots.run(self._begin(n), n)

    def publish(self, n: int) -> None:
        """Publish ``n`` records filled through the view from :meth:`claim`."""
        if n < 0:
            raise ValueError(f"cannot publish {n} records")
        pub = self._c[16]
        if pub + n > self._claim:
            raise ValueError(f"publishing {n} records but only {self._claim - pub} were claimed")
        if self._slots._seq is not None:
            self._slots.stamp(pub, n)
        self._end(pub, n)

    def _wake(self) -> None:
        # One fence, then a look at every sleeper flag: readers that spin or yield never
        # set theirs, so this costs a fence and a 128-byte read when nobody sleeps.
        ring = self.ring
        full_fence()
        # tobytes() then ==: comparing the memoryview itself unpacks it item by item (4x)
        if ring._sleeper_bytes.tobytes() != _NO_SLEEPERS:
            for i, db in enumerate(ring._doorbells):
                if ring._sleepers[i]:
                    db.wake()

    def close(self) -> None:
        self.ring._writer_pid[0] = 0
        self.ring._give(WRITER_LOCK_BYTE)


class RingReader:
    """One reader: a registered cursor slot, zero-copy batches, lap detection."""

    def __init__(
        self, ring: BroadcastRing, strategy: WaitStrategy, start: Start, slot: int | None
    ) -> None:
        if isinstance(start, str) and start not in ("latest", "oldest", "resume"):
            raise ValueError(
                f"start must be 'latest', 'oldest', 'resume' or a sequence number, got {start!r}"
            )
        self.ring = ring
        self.strategy = strategy
        self.slot = self._register(slot)
        base = self.slot * LINE // 8
        self._w = ring._slots[base : base + LINE // 8]
        self._c = ring._cursors
        self._records = ring.records
        self._mask = ring.mask
        self._cap = ring.capacity
        self._doorbell = ring._doorbells[self.slot]
        # A successor of a reader that was killed or closed continues its cursor and its
        # loss counters: what the predecessor held unvalidated is delivered again.
        resume = start == "resume" and bool(self._w[R_REGISTERED])
        pos = self._start_position(start, resume)
        self.position = pos
        self.lost = self._w[R_LOST] if resume else 0  # records never got (skipped, discarded)
        self.gaps = self._w[R_GAPS] if resume else 0  # events that lost records
        if not isinstance(start, str) and int(start) < pos <= self._c[16]:
            # Asked for records the writer has already overwritten: they are lost, and
            # the reader is told so, as when it is lapped.
            self.lost += pos - max(int(start), 0)
            self.gaps += 1
        self.accepted = 0
        self._batch_start = pos
        self._batch_len = 0
        self._w[R_CURSOR] = pos
        self._w[R_LOST] = self.lost
        self._w[R_GAPS] = self.gaps
        self._w[R_REGISTERED] = time.time_ns()
        self._w[R_PID] = os.getpid()

    def _start_position(self, start: Start, resume: bool) -> int:
        """Where reading begins, never past the publish cursor.

        A sequence number is clamped to the records still valid; a resumed cursor is not
        (read() jumps it forward and counts what the predecessor's slot missed).
        """
        pub = self._c[16]
        oldest = max(0, self._c[0] - self._cap)
        if start == "latest" or (start == "resume" and not resume):
            return pub
        if start == "oldest":
            return oldest
        if resume:
            return min(self._w[R_CURSOR], pub)
        return min(max(int(start), oldest), pub)

    def _register(self, slot: int | None) -> int:
        candidates = range(MAX_READERS) if slot is None else [slot]
        for i in candidates:
            if self.ring._take(READER_LOCK_BYTE0 + i):
                return i
        if slot is None:
            raise SegmentInUse(
                f"ring {self.ring.segment.name}: all {MAX_READERS} reader slots are held"
            )
        pid = self.ring._slots[slot * LINE // 8 + R_PID]
        raise SegmentInUse(
            f"ring {self.ring.segment.name}: reader slot {slot} is held by pid {pid}"
        )

    def available(self) -> int:
        """Published records not yet read (may exceed capacity when lapped)."""
        return self._c[16] - self.position

    def read(self, max_records: int) -> np.ndarray:
        """A zero-copy view of up to ``max_records`` unread records (possibly empty).

        Call :meth:`valid` after using the view: only then is the batch known intact, and
        only then does the slot's cursor (what ``start="resume"`` continues) move past it.
        """
        if max_records < 0:
            raise ValueError(f"cannot read {max_records} records")
        pos = self.position
        pub = self._c[16]
        if pub - pos > self._cap:
            oldest = self._c[0] - self._cap
            # Reload publish after claim: the writer may have lapped us again since the
            # first load, leaving oldest > pub (a negative run, a position moving back).
            # claim <= publish + capacity whenever claim is stored, so now oldest <= pub.
            pub = self._c[16]
            self.lost += oldest - pos
            self.gaps += 1
            # Counters before the cursor: a kill in between counts the skip twice at
            # worst, never zero times.
            self._w[R_LOST] = self.lost
            self._w[R_GAPS] = self.gaps
            self._w[R_CURSOR] = oldest
            pos = oldest
        start = pos & self._mask
        n = min(pub - pos, max_records, self._cap - start)
        self._batch_start = pos
        self._batch_len = n
        self.position = pos + n
        return self._records[start : start + n]

    def valid(self) -> bool:
        """After using the last view: False if the writer lapped it (batch counted lost)."""
        end = self._batch_start + self._batch_len
        if self._c[0] <= self._batch_start + self._cap:
            self.accepted += self._batch_len
            self._w[R_CURSOR] = end
            return True
        self.lost += self._batch_len
        self.gaps += 1
        self._w[R_LOST] = self.lost
        self._w[R_GAPS] = self.gaps
        self._w[R_CURSOR] = end
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Wait with this reader's strategy until a record is published past our cursor."""
        c = self._c
        return wait_until(lambda: c[16] > self.position, self.strategy, self._doorbell, timeout)

    def close(self) -> None:
        """Release the slot; its cursor stays for ``start="resume"`` by a successor."""
        self._w[R_PID] = 0
        self.ring._give(READER_LOCK_BYTE0 + self.slot)

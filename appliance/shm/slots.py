"""What the ring and the queue share: a segment of power-of-two record slots, and
copying records into those slots, wrapping at the end.
 Records are copied as bytes: numpy copies structured
arrays field by field, about ten times slower than a byte copy for 64-byte records.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np

from appliance.shm.errors import SegmentError
from appliance.shm.files import SEMAPHORE_BYTES, check_name
from appliance.shm.header import Expected, segment_bytes
from appliance.shm.locks import try_lock, unlock
from appliance.shm.segment import Segment, full_name
from appliance.shm.semaphore import create_semaphore, open_semaphore
from appliance.shm.wait import Doorbell


def check_records(records: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """``records`` as a contiguous 1-D array of ``dtype``, or a clear error."""
    if not isinstance(records, np.ndarray):
        raise TypeError(f"{where} takes a numpy array of {dtype}, was handed {type(records)}")
    if records.dtype != dtype:
        raise TypeError(f"{where} holds records of dtype {dtype}, was handed {records.dtype}")
    if records.ndim != 1:
        raise ValueError(f"{where}: records must be one-dimensional, got shape {records.shape}")
    return np.ascontiguousarray(records)


# Batches up to this many bytes are copied through ``bytes`` (see Slots.copy_in).
SMALL_COPY = 16384


class Slots:
    """A view of ``capacity`` record slots with wrapping copy-in and sequence stamping."""

    def __init__(self, records: np.ndarray, seq_field: str | None = None) -> None:
        self.records = records
        self.capacity = len(records)
        self.mask = self.capacity - 1
        self._bytes = records.view(np.uint8)
        self._mv = memoryview(self._bytes)
        self._isz = records.dtype.itemsize
        self._seq = None if seq_field is None else records[seq_field]

    def copy_in(self, seq0: int, src: np.ndarray, offset: int, n: int) -> None:
        """Copy ``src[offset:offset+n]`` to the slots of sequence numbers ``seq0...``."""
        start = seq0 & self.mask
        first = min(n, self.capacity - start)
        isz = self._isz
        if n * isz <= SMALL_COPY:
            # Small batches: one bytes round trip into a memoryview costs a few hundred ns,
            # where numpy's slicing and assignment machinery costs over a microsecond.
            raw = (src if offset == 0 and len(src) == n else src[offset : offset + n]).tobytes()
            a, cut = start * isz, first * isz
            if first == n:
                self._mv[a : a + cut] = raw
            else:
                view = memoryview(raw)
                self._mv[a : a + cut] = view[:cut]
                self._mv[: n * isz - cut] = view[cut:]
        else:
            raw = src.view(np.uint8)
            base = offset * isz
            self._bytes[start * isz : (start + first) * isz] = raw[base : base + first * isz]
            if first < n:
                self._bytes[: (n - first) * isz] = raw[base + first * isz : base + n * isz]
        if self._seq is not None:
            self.stamp(seq0, n)

    def stamp(self, seq0: int, n: int) -> None:
        """Write sequence numbers ``seq0 .. seq0+n-1`` into the seq field of their slots."""
        seq = self._seq
        start = seq0 & self.mask
        if n == 1:
            seq[start] = seq0
            return
        first = min(n, self.capacity - start)
        seq[start : start + first] = np.arange(seq0, seq0 + first, dtype=seq.dtype)
        if first < n:
            seq[: n - first] = np.arange(seq0 + first, seq0 + n, dtype=seq.dtype)

    def run(self, seq0: int, n: int) -> np.ndarray:
        """Zero-copy view of the contiguous run of at most ``n`` slots from ``seq0``."""
        start = seq0 & self.mask
        return self.records[start : start + min(n, self.capacity - start)]


class SlotSegment:
    """A named segment of one structure: a control block, then a power-of-two array of
    records at byte ``RECORDS`` of the data area, plus the doorbells its sleepers use.

    Subclasses say what kind of structure it is, where their sleeper flags live and what
    their roles are; creating, attaching, role locks and teardown are shared here.
    """

    KIND: ClassVar[str]
    RECORDS: ClassVar[int] = 4096
    META: ClassVar[dict[str, Any]] = {}
    # Name suffixes of the doorbells' semaphores, in the order of _sleeper_flags().
    SEMAPHORES: ClassVar[tuple[str, ...]] = ()

    def __init__(self, segment: Segment, dtype: np.dtype) -> None:
        self.segment = segment
        self.dtype = dtype
        self.capacity = segment.capacity
        self.mask = self.capacity - 1
        self.records = segment.array(self.RECORDS, dtype, self.capacity)
        # Roles this process holds through this object: OFD locks taken on one file
        # description do not conflict with each other, so in-process exclusion is ours.
        self._held: set[int] = set()
        self._doorbells: list[Doorbell] = []

    @classmethod
    def data_size(cls, dtype: np.dtype, capacity: int) -> int:
        return cls.RECORDS + capacity * dtype.itemsize

    @classmethod
    def footprint(cls, dtype: np.dtype, capacity: int) -> int:
        """Bytes the structure takes in the shm filesystem: its segment and semaphores."""
        return segment_bytes(cls.data_size(dtype, capacity)) + len(cls.SEMAPHORES) * SEMAPHORE_BYTES

    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        dtype: np.dtype,
        capacity: int,
        group: int | str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Self:
        """Create it (owner). ``group`` may read it and open its semaphores; ``meta``: the
        creator's own header entries (``segment.meta`` to whoever attaches)."""
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"{cls.KIND} capacity must be a power of two >= 2, got {capacity}")
        full = full_name(instance, name)
        check_name(full, cls.SEMAPHORES)
        seg = Segment.create(
            full,
            kind=cls.KIND,
            dtype=dtype,
            capacity=capacity,
            data_size=cls.data_size(dtype, capacity),
            meta={**(meta or {}), **cls.META},
            group=group,
        )
        return cls._build(seg, dtype, create=True)

    @classmethod
    def attach(
        cls,
        instance: str,
        name: str,
        dtype: np.dtype,
        capacity: int | None = None,
        read_only: bool = False,
    ) -> Self:
        """Attach to it. ``read_only``: to watch it only (no roles, no doorbells)."""
        full = full_name(instance, name)
        check_name(full, cls.SEMAPHORES)
        expected = Expected(
            cls.KIND,
            dtype,
            capacity,
            data_size=lambda c: cls.data_size(dtype, c),
            power_of_two=True,
            meta=cls.META,
        )
        seg = Segment.attach(full, expected, read_only=read_only)
        return cls._build(seg, dtype, create=False)

    @classmethod
    def _build(cls, seg: Segment, dtype: np.dtype, create: bool) -> Self:
        """The structure over ``seg``; on failure nothing stays open, nor (created) named."""
        obj = None
        try:
            obj = cls(seg, dtype)
            if not seg.read_only:
                obj._open_doorbells(create)
        except BaseException:
            if obj is not None:
                obj._release(unlink=create)
            else:
                if create:
                    seg.unlink()
                seg.close()
            raise
        return obj

    def _sleeper_flags(self) -> list[memoryview]:
        """The flag word of every sleeper the structure has, in SEMAPHORES order."""
        raise NotImplementedError

    def _open_doorbells(self, create: bool) -> None:
        seg = self.segment
        for flag, suffix in zip(self._sleeper_flags(), self.SEMAPHORES, strict=True):
            sem_name = f"{seg.name}.{suffix}"
            if create:
                sem, inode = create_semaphore(sem_name, seg.access)
                flag[0] = 0
            else:
                sem, inode = open_semaphore(sem_name, seg.uid)
            self._doorbells.append(Doorbell(flag, sem, inode))

    def _take(self, byte: int) -> bool:
        """Take the role whose OFD lock is ``byte``; False while anyone else holds it."""
        if self.segment.read_only:
            raise SegmentError(f"{self.segment.name} is attached read-only: no roles to take")
        if byte in self._held or not try_lock(self.segment.fd, byte):
            return False
        self._held.add(byte)
        return True

    def _give(self, byte: int) -> None:
        self._held.discard(byte)
        unlock(self.segment.fd, byte)

    def _release(self, unlink: bool, keep_records: bool = False) -> list[str]:
        """Close (and ``unlink``: remove) the semaphores and, unless ``keep_records``, the
        segment; what stayed."""
        problems = []
        for d in self._doorbells:
            if unlink and (problem := d.unlink()):
                problems.append(problem)
            d.close()
        self._doorbells = []
        if unlink and not keep_records:
            self.segment.unlink()
        self.records = None
        self.segment.close()
        return problems

    def close(self) -> None:
        self._release(unlink=False)

    def leave(self) -> None:
        """Owner only: close, leaving the segment named for a later process to attach
        read-only and read what it holds; the semaphores, which only sleepers of a live
        structure need, are removed. With its owner gone the segment is stale, and is
        reclaimed like any other (``reclaim_stale``)."""
        problems = self._release(unlink=True, keep_records=True)
        if problems:
            raise SegmentError(f"{self.segment.name} left, but: " + "; ".join(problems))

    def destroy(self) -> None:
        """Owner only: unlink the segment and its semaphores, then close.

        Everything of ours is removed even when some name cannot be; those are reported
        afterwards as one SegmentError.
        """
        problems = self._release(unlink=True)
        if problems:
            raise SegmentError(f"{self.segment.name} removed, but: " + "; ".join(problems))

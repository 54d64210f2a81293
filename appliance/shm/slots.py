"""What the ring and the queue share: a segment of power-of-two record slots, and
copying records into those slots, wrapping at the end.
 Records are copied as bytes: numpy copies structured
arrays field by field, about ten times slower than a byte copy for 64-byte records.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np

from appliance.shm.segment import Segment, full_name, try_lock, unlock
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
    def create(cls, instance: str, name: str, dtype: np.dtype, capacity: int) -> Self:
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError(f"{cls.KIND} capacity must be a power of two >= 2, got {capacity}")
        seg = Segment.create(
            full_name(instance, name),
            kind=cls.KIND,
            dtype=dtype,
            capacity=capacity,
            data_size=cls.RECORDS + capacity * dtype.itemsize,
            meta=cls.META,
        )
        obj = cls(seg, dtype)
        obj._open_doorbells(create=True)
        return obj

    @classmethod
    def attach(cls, instance: str, name: str, dtype: np.dtype, capacity: int | None = None) -> Self:
        seg = Segment.attach(
            full_name(instance, name), kind=cls.KIND, dtype=dtype, capacity=capacity
        )
        obj = cls(seg, dtype)
        obj._open_doorbells(create=False)
        return obj

    def _sleeper_flags(self) -> list[tuple[memoryview, str]]:
        """(flag word, semaphore name suffix) of every sleeper the structure has."""
        raise NotImplementedError

    def _open_doorbells(self, create: bool) -> None:
        name = self.segment.name
        self._doorbells = [
            Doorbell(flag, f"{name}.{suffix}", create=create)
            for flag, suffix in self._sleeper_flags()
        ]

    def _take(self, byte: int) -> bool:
        """Take the role whose OFD lock is ``byte``; False while anyone else holds it."""
        if byte in self._held or not try_lock(self.segment.fd, byte):
            return False
        self._held.add(byte)
        return True

    def _give(self, byte: int) -> None:
        self._held.discard(byte)
        unlock(self.segment.fd, byte)

    def close(self) -> None:
        for d in self._doorbells:
            d.close()
        self.records = None
        self.segment.close()

    def destroy(self) -> None:
        """Owner only: unlink the segment and its semaphores, then close."""
        for d in self._doorbells:
            d.unlink()
        self.segment.unlink()
        self.close()

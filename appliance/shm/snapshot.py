"""SharedSnapshot: one writer publishes a whole array (plus a few tags) for many readers.

A seqlock: the writer makes the version odd, writes the array and tags, then makes it
even again; a reader copies the version, the data and the version once more and retries
unless both versions are the same even number. Stores are ordered on x86-64 and so are
loads (see ordering.py), so an even, unchanged version proves the copy is one snapshot.
The writer never waits; a reader retries only while a write is in progress.

A seqlock holds only with one writer: two interleaved writers could each see an even
version and leave a torn array with an even version. The first :meth:`write` takes the
writer role (an OFD lock, like a stats slot), and a second live writer is refused.

Layout of the data area: version (own 128-byte line), tags (up to 16 int64, own line),
the writer's pid (own line), then the array's bytes at 4096. The header records the
array's shape, so attaching with another shape of the same size is refused.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from appliance.shm.errors import SegmentError, SegmentInUse, SegmentMismatch
from appliance.shm.header import Expected, segment_bytes
from appliance.shm.locks import try_lock, unlock
from appliance.shm.segment import Segment, full_name

KIND = "snapshot"
VERSION, TAGS, WRITER, DATA = 0, 128, 256, 4096
MAX_TAGS = 16
WRITER_LOCK_BYTE = 1


class SnapshotBusy(RuntimeError):
    """The writer kept the snapshot busy for longer than the reader would retry."""


def _shape_problems(meta: dict[str, Any]) -> list[str]:
    shape = meta.get("shape")
    if not (isinstance(shape, list) and all(isinstance(n, int) and n >= 0 for n in shape)):
        return [f"meta shape {shape!r} is not a list of sizes"]
    return []


class SharedSnapshot:
    """A seqlock-protected array of ``shape`` elements of ``dtype``."""

    def __init__(self, segment: Segment, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.segment = segment
        self.shape = shape
        self._version = segment.words(VERSION)
        self._tags = segment.words(TAGS, MAX_TAGS)
        self._writer_pid = segment.words(WRITER)
        self._writing = False
        count = int(np.prod(shape))
        self.array = segment.array(DATA, dtype, count).reshape(shape)

    @staticmethod
    def footprint(dtype: np.dtype, shape: tuple[int, ...]) -> int:
        """Bytes a snapshot of this dtype and shape takes in the shm filesystem."""
        return segment_bytes(_data_size(np.dtype(dtype), int(np.prod(shape))))

    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        dtype: np.dtype,
        shape: tuple[int, ...],
        group: int | str | None = None,
    ) -> SharedSnapshot:
        """Create it (owner). ``group`` may read it."""
        dtype, count = np.dtype(dtype), int(np.prod(shape))
        seg = Segment.create(
            full_name(instance, name),
            kind=KIND,
            dtype=dtype,
            capacity=count,
            data_size=_data_size(dtype, count),
            meta={"shape": list(shape)},
            group=group,
        )
        return cls(seg, dtype, shape)

    @classmethod
    def attach(
        cls,
        instance: str,
        name: str,
        dtype: np.dtype,
        shape: tuple[int, ...] | None = None,
        read_only: bool = False,
    ) -> SharedSnapshot:
        """Attach to it; refused unless dtype and shape are the creator's (``shape`` None:
        take the creator's shape, for readers that only know the dtype)."""
        dtype = np.dtype(dtype)
        expected = Expected(
            KIND,
            dtype,
            None if shape is None else int(np.prod(shape)),
            data_size=lambda count: _data_size(dtype, count),
            meta={} if shape is None else {"shape": list(shape)},
            meta_check=_shape_problems,
        )
        seg = Segment.attach(full_name(instance, name), expected, read_only=read_only)
        stored = tuple(seg.meta["shape"])
        if int(np.prod(stored)) != seg.capacity:
            seg.close()
            raise SegmentMismatch(
                f"segment {seg.name}: shape {stored} does not hold its {seg.capacity} records"
            )
        return cls(seg, dtype, stored)

    @property
    def version(self) -> int:
        return self._version[0]

    def write(
        self,
        values: np.ndarray | None = None,
        tags: dict[int, int] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        """Publish new contents: whole ``values``, or ``values`` for ``rows`` only.

        The first write makes this object the snapshot's only writer until it is closed
        (or its process dies); SegmentInUse while another one is.
        """
        if not self._writing:
            self._become_writer()
        # Odd while writing. A writer killed mid-write leaves the version odd, so the next
        # one starts from the odd value rather than flipping the parity for good.
        odd = self._version[0] | 1
        self._version[0] = odd
        if values is not None:
            if rows is None:
                self.array[...] = values
            else:
                self.array[rows] = values
        for i, t in (tags or {}).items():
            self._tags[i] = t
        self._version[0] = odd + 1

    def _become_writer(self) -> None:
        seg = self.segment
        if seg.read_only:
            raise SegmentError(f"snapshot {seg.name} is attached read-only: it cannot be written")
        if not try_lock(seg.fd, WRITER_LOCK_BYTE):
            raise SegmentInUse(
                f"snapshot {seg.name} already has a live writer (pid {self._writer_pid[0]})"
            )
        self._writer_pid[0] = os.getpid()
        self._writing = True

    def tag(self, index: int) -> int:
        """One tag word, without the seqlock (a single aligned word is never torn)."""
        return self._tags[index]

    def read(self, timeout: float = 2.0) -> tuple[np.ndarray, list[int], int]:
        """A consistent copy: (array, tags, version).

        Retries while a write is in progress, yielding the core: on a machine with fewer
        cores than processes the writer may be pre-empted mid-write for a while.
        """
        deadline = time.monotonic() + timeout
        while True:
            v1 = self._version[0]
            if not v1 & 1:
                data = self.array.copy()
                tags = self._tags.tolist()
                if self._version[0] == v1:
                    return data, tags, v1
            if time.monotonic() > deadline:
                raise SnapshotBusy(
                    f"snapshot {self.segment.name} stayed mid-write for {timeout}s "
                    "(its writer is stuck or was killed mid-write)"
                )
            os.sched_yield()

    def close(self) -> None:
        if self._writing:
            self._writer_pid[0] = 0
            unlock(self.segment.fd, WRITER_LOCK_BYTE)
            self._writing = False
        self.array = None
        self.segment.close()

    def destroy(self) -> None:
        self.segment.unlink()
        self.close()


def _data_size(dtype: np.dtype, count: int) -> int:
    return DATA + count * dtype.itemsize

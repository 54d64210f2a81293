"""SharedSnapshot: one writer publishes a whole array (plus a few tags) for many readers.

A seqlock: the writer makes the version odd, writes the array and tags, then makes it
even again; a reader copies the version, the data and the version once more and retries
unless both versions are the same even number. Stores are ordered on x86-64 and so are
loads (see ordering.py), so an even, unchanged version proves the copy is one snapshot.
The writer never waits; a reader retries only while a write is in progress.

Layout of the data area: version (own 128-byte line), tags (up to 16 int64, own line),
then the array's bytes.
"""

from __future__ import annotations

import os
import time

import numpy as np

from appliance.shm.segment import Segment, full_name

KIND = "snapshot"
VERSION, TAGS, DATA = 0, 128, 4096
MAX_TAGS = 16


class SnapshotBusy(RuntimeError):
    """The writer kept the snapshot busy for longer than the reader would retry."""


class SharedSnapshot:
    """A seqlock-protected array of ``shape`` elements of ``dtype``."""

    def __init__(self, segment: Segment, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.segment = segment
        self.shape = shape
        self._version = segment.words(VERSION)
        self._tags = segment.words(TAGS, MAX_TAGS)
        count = int(np.prod(shape))
        self.array = segment.array(DATA, dtype, count).reshape(shape)

    @classmethod
    def create(
        cls, instance: str, name: str, dtype: np.dtype, shape: tuple[int, ...]
    ) -> SharedSnapshot:
        count = int(np.prod(shape))
        seg = Segment.create(
            full_name(instance, name),
            kind=KIND,
            dtype=np.dtype(dtype),
            capacity=count,
            data_size=DATA + count * np.dtype(dtype).itemsize,
            meta={"shape": list(shape)},
        )
        return cls(seg, np.dtype(dtype), shape)

    @classmethod
    def attach(
        cls, instance: str, name: str, dtype: np.dtype, shape: tuple[int, ...]
    ) -> SharedSnapshot:
        count = int(np.prod(shape))
        seg = Segment.attach(
            full_name(instance, name), kind=KIND, dtype=np.dtype(dtype), capacity=count
        )
        return cls(seg, np.dtype(dtype), shape)

    @property
    def version(self) -> int:
        return self._version[0]

    def write(
        self,
        values: np.ndarray | None = None,
        tags: dict[int, int] | None = None,
        rows: np.ndarray | None = None,
    ) -> None:
        """Publish new contents: whole ``values``, or ``values`` for ``rows`` only."""
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
        self.array = None
        self.segment.close()

    def destroy(self) -> None:
        self.segment.unlink()
        self.close()

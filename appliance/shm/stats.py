"""Stats: one slot per process for heartbeats, counters and a latency histogram.

Each slot has exactly one writer (the process that holds it, enforced by an OFD lock),
and any process may read any slot without locks. Every value a reader cares about is an
aligned 8-byte word written with one store, so a reader sees either the old or the new
value of each word, never a torn one. A snapshot across words is not atomic, which is fine
for monitoring: counters and histogram buckets only grow, and the heartbeat is a time
(``time.monotonic_ns()``; ``started_ns`` is wall-clock time).

Counter names are chosen by whoever creates the segment and stored in its header, so the
segment stays generic. Counters survive a restart of the slot's process (the successor
attaches to the same slot and adds to them); ``incarnation`` counts the restarts.
"""

from __future__ import annotations

import os
import time

import numpy as np

from appliance.shm.errors import SegmentError, SegmentInUse
from appliance.shm.header import Expected, segment_bytes
from appliance.shm.locks import is_locked, try_lock, unlock
from appliance.shm.segment import Segment, full_name

KIND = "stats"
MAX_COUNTERS = 16
BUCKETS = 64  # bucket b counts latencies v with v.bit_length() == b (b=0: v == 0)
SLOT_LOCK_BYTE0 = 1


class SlotState:
    FREE = 0
    STARTING = 1
    RUNNING = 2
    STOPPING = 3
    STOPPED = 4
    NAMES = {0: "free", 1: "starting", 2: "running", 3: "stopping", 4: "stopped"}


SLOT = np.dtype(
    {
        "names": [
            "pid",
            "started_ns",
            "heartbeat_ns",
            "incarnation",
            "core",
            "state",
            "role",
            "name",
            "counters",
            "histogram",
        ],
        "formats": [
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "<i8",
            "S16",
            "S32",
            ("<u8", MAX_COUNTERS),
            ("<u8", BUCKETS),
        ],
        "offsets": [0, 8, 16, 24, 32, 40, 48, 64, 128, 256],
        "itemsize": 768,
    }
)
_W = SLOT.itemsize // 8  # words per slot
_PID, _STARTED, _HEARTBEAT, _INCARNATION, _CORE, _STATE = range(6)
_COUNTERS, _HISTOGRAM = 128 // 8, 256 // 8


class Stats:
    """A segment of process slots. Create once (owner), attach anywhere."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.slots = segment.array(0, SLOT, segment.capacity)
        self._words = segment.words(0, segment.capacity * _W)
        self.counter_names: list[str] = segment.meta["counters"]
        self._held: set[int] = set()

    @staticmethod
    def footprint(slots: int) -> int:
        """Bytes a stats segment of ``slots`` slots takes in the shm filesystem."""
        return segment_bytes(_data_size(slots))

    @classmethod
    def create(
        cls,
        instance: str,
        name: str,
        slots: int,
        counters: list[str],
        group: int | str | None = None,
    ) -> Stats:
        """Create it (owner). ``group`` may read it."""
        if len(counters) > MAX_COUNTERS:
            raise ValueError(f"at most {MAX_COUNTERS} counters, got {len(counters)}")
        if len(set(counters)) != len(counters):
            raise ValueError(f"counter names repeat: {counters}")
        seg = Segment.create(
            full_name(instance, name),
            kind=KIND,
            dtype=SLOT,
            capacity=slots,
            data_size=_data_size(slots),
            meta={"counters": list(counters)},
            group=group,
        )
        return cls(seg)

    @classmethod
    def attach(cls, instance: str, name: str, read_only: bool = False) -> Stats:
        """Attach to it; ``read_only`` to watch only (no slot can be taken)."""
        expected = Expected(KIND, SLOT, data_size=_data_size, meta_check=_counter_problems)
        return cls(Segment.attach(full_name(instance, name), expected, read_only=read_only))

    def slot(self, index: int, role: str, name: str, core: int = -1) -> StatsSlot:
        """Become the writer of slot ``index`` (refused while another live process is)."""
        if not 0 <= index < len(self.slots):
            raise IndexError(f"stats slot {index} outside 0..{len(self.slots) - 1}")
        if self.segment.read_only:
            raise SegmentError(f"{self.segment.name} is attached read-only: no slot to take")
        byte = SLOT_LOCK_BYTE0 + index
        if byte in self._held or not try_lock(self.segment.fd, byte):
            pid = int(self.slots[index]["pid"])
            raise SegmentInUse(f"stats slot {index} is held by live pid {pid}")
        self._held.add(byte)
        return StatsSlot(self, index, role, name, core)

    def alive(self, index: int) -> bool:
        """True while a live process holds slot ``index``."""
        byte = SLOT_LOCK_BYTE0 + index
        return byte in self._held or is_locked(self.segment.fd, byte)

    def snapshot(self) -> list[dict]:
        """A copy of every slot ever used, as plain Python values."""
        copy = self.slots.copy()
        out = []
        for i, s in enumerate(copy):
            if not s["started_ns"]:
                continue
            out.append(
                {
                    "slot": i,
                    "pid": int(s["pid"]),
                    "alive": self.alive(i),
                    "role": s["role"].decode(),
                    "name": s["name"].decode(),
                    "core": int(s["core"]),
                    "state": SlotState.NAMES.get(int(s["state"]), "?"),
                    "incarnation": int(s["incarnation"]),
                    "started_ns": int(s["started_ns"]),
                    "heartbeat_ns": int(s["heartbeat_ns"]),
                    "counters": {
                        n: int(v) for n, v in zip(self.counter_names, s["counters"], strict=False)
                    },
                    "histogram": s["histogram"].copy(),
                }
            )
        return out

    def close(self) -> None:
        for byte in list(self._held):
            unlock(self.segment.fd, byte)
        self._held.clear()
        self.slots = None
        self.segment.close()

    def destroy(self) -> None:
        self.segment.unlink()
        self.close()


class StatsSlot:
    """The writing side of one slot. All updates are single aligned 8-byte stores."""

    def __init__(self, stats: Stats, index: int, role: str, name: str, core: int) -> None:
        self.stats = stats
        self.index = index
        base = index * _W
        self._w = stats._words[base : base + _W]
        self._c = stats._words[base + _COUNTERS : base + _COUNTERS + MAX_COUNTERS]
        self._h = stats._words[base + _HISTOGRAM : base + _HISTOGRAM + BUCKETS]
        self._hist = stats.slots[index]["histogram"]
        self._index = {n: i for i, n in enumerate(stats.counter_names)}
        rec = stats.slots[index]
        rec["role"] = role.encode()[:16]
        rec["name"] = name.encode()[:32]
        self._w[_CORE] = core
        self._w[_INCARNATION] += 1
        self._w[_HEARTBEAT] = time.monotonic_ns()
        self._w[_STARTED] = time.time_ns()
        self._w[_STATE] = SlotState.STARTING
        self._w[_PID] = os.getpid()

    def counter(self, name: str) -> int:
        """The index of a counter, for :meth:`add` on hot paths."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(
                f"no counter {name!r}; this stats segment has {self.stats.counter_names}"
            ) from None

    def add(self, counter: int, n: int = 1) -> None:
        self._c[counter] += n

    def set(self, counter: int, value: int) -> None:
        self._c[counter] = value

    def get(self, counter: int) -> int:
        return self._c[counter]

    def beat(self, now_ns: int | None = None) -> None:
        # CLOCK_MONOTONIC: system-wide on Linux, and a wall-clock step cannot make every
        # process look stalled at once.
        self._w[_HEARTBEAT] = time.monotonic_ns() if now_ns is None else now_ns

    def state(self, state: int) -> None:
        self._w[_STATE] = state

    def observe(self, ns: int) -> None:
        """Count one latency (nanoseconds) in its log2 bucket."""
        self._h[min(max(ns, 0).bit_length(), BUCKETS - 1)] += 1

    def observe_many(self, ns: np.ndarray) -> None:
        """Count a batch of latencies; one vectorised pass."""
        if len(ns) == 0:
            return
        v = np.maximum(np.asarray(ns, dtype=np.int64), 0)
        buckets = np.where(v > 0, np.floor(np.log2(np.maximum(v, 1))).astype(np.int64) + 1, 0)
        counts = np.bincount(np.minimum(buckets, BUCKETS - 1), minlength=BUCKETS)
        # Each bucket word is still one aligned store per bucket (numpy's add writes whole
        # words), and only this process writes them.
        self._hist += counts.astype(np.uint64)

    def close(self, state: int = SlotState.STOPPED) -> None:
        self._w[_STATE] = state
        byte = SLOT_LOCK_BYTE0 + self.index
        self.stats._held.discard(byte)
        unlock(self.stats.segment.fd, byte)


def _data_size(slots: int) -> int:
    return slots * SLOT.itemsize


def _counter_problems(meta: dict) -> list[str]:
    names = meta.get("counters")
    if (
        not isinstance(names, list)
        or len(names) > MAX_COUNTERS
        or not all(isinstance(n, str) for n in names)
    ):
        return [f"meta counters {names!r} is not a list of at most {MAX_COUNTERS} names"]
    return []


def percentile(histogram: np.ndarray, q: float) -> float:
    """Upper bound (ns) of the log2 bucket holding the q-th percentile (0 < q <= 100)."""
    total = int(histogram.sum())
    if total == 0:
        return float("nan")
    rank = q / 100.0 * total
    cum = np.cumsum(histogram)
    b = int(np.searchsorted(cum, rank))
    return float(0 if b == 0 else (1 << b) - 1)

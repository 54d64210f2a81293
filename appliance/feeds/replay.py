"""Replay of recorded ticks, as fast as possible or at the recorded pace.

The source is a tick file, a Parquet history folder or a folder of raw exchange captures
(see sources.py). Iterating a ReplayFeed yields views of the source's chunks (zero-copy for
a tick file); ``write`` then copies a view into the ring's slots, mapping the source's
symbol indexes to the config's (by name) and stamping recv_ns. With ``loop``, the source
starts over at its end and ts_ns is shifted by the recording's span each time round, so
event time keeps increasing. ``since_ns``/``until_ns`` keep the ticks whose recorded
recv_ns lies in [since, until).

Records whose prices or sizes cannot be true (NaN or infinite, negative, a crossed book,
a trade at no price) are dropped, never used: each is counted by reason in ``bad``, the
first few are logged with where they are, and every pass logs the count. A price of 0 is
an empty side of the book (a one-sided quote), not garbage.

At recorded pace a batch holds the records whose ts_ns is due by now (relative to the
first record, anchored when iteration starts), at most ``batch_size``. While nothing is
due the iterator sleeps, but never longer than ``max_wait_s`` before yielding an empty
batch, so the feed worker keeps heartbeating through gaps in the recording.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np

from appliance.feeds.sources import TickSource, open_source
from appliance.model.records import TICK, TickKind

log = logging.getLogger(__name__)

#: Bad records logged one by one per pass; the rest are counted.
LOGGED_BAD = 10
_PRICES = ("bid", "ask", "last_price")
_SIZES = ("bid_size", "ask_size", "last_size")

Pace = Literal["recorded", "fast"]


class ReplayError(ValueError):
    """A tick file that does not fit the config (e.g. a symbol the config lacks)."""


class ReplayFeed:
    """Batches of recorded ticks (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | TickSource,
        symbols: Sequence[str],
        *,
        pace: Pace = "recorded",
        loop: bool = False,
        batch_size: int = 1024,
        max_wait_s: float = 0.1,
        since_ns: int | None = None,
        until_ns: int | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if pace not in ("recorded", "fast"):
            raise ValueError(f"pace must be 'recorded' or 'fast', got {pace!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.source = open_source(path) if isinstance(path, str | os.PathLike) else path
        index = {name: i for i, name in enumerate(symbols)}
        unknown = [name for name in self.source.symbols if name not in index]
        if unknown:
            raise ReplayError(
                f"{getattr(self.source, 'path', None) or getattr(self.source, 'root', '')}: "
                f"symbols {unknown} are not in the config's symbols {list(symbols)}"
            )
        #: Source symbol index -> config symbol index.
        self.symbol_map = np.array([index[name] for name in self.source.symbols], np.uint16)
        self.pace = pace
        self.loop = loop
        self.batch_size = batch_size
        self.max_wait_ns = int(max_wait_s * 1e9)
        self.since_ns, self.until_ns = since_ns, until_ns
        self._clock = clock
        self._sleep = sleep
        self._period_ns = 0  # shift of ts_ns per pass: known after the first pass
        #: Completed passes over the source (ts_ns of the current one is shifted by
        #: passes * the recording's period).
        self.passes = 0
        self.bad: Counter[str] = Counter()  # records dropped, by reason, over every pass
        self._bad_pass = 0  # ... in the current pass
        self._where = str(getattr(self.source, "path", None) or getattr(self.source, "root", ""))

    @property
    def ts_offset_ns(self) -> int:
        """What ``write`` adds to ts_ns: shifts the current pass after the earlier ones."""
        return self.passes * self._period_ns

    def _chunks(self) -> Iterator[np.ndarray]:
        for chunk in self.source.chunks():
            if self.since_ns is not None or self.until_ns is not None:
                recv = chunk["recv_ns"]
                keep = np.ones(len(chunk), bool)
                if self.since_ns is not None:
                    keep &= recv >= self.since_ns
                if self.until_ns is not None:
                    keep &= recv < self.until_ns
                chunk = chunk[keep]
            chunk = self._sound(chunk)
            if len(chunk):
                yield chunk

    def _sound(self, chunk: np.ndarray) -> np.ndarray:
        """``chunk`` without the records no market could have printed (counted, logged)."""
        bad = np.flatnonzero(bad_ticks(chunk))
        if not bad.size:
            return chunk
        for i in bad.tolist():
            t = chunk[i]
            why = why_bad(t)
            self.bad[why] += 1
            self._bad_pass += 1
            if self._bad_pass <= LOGGED_BAD:
                sym = int(t["symbol"])
                name = self.source.symbols[sym] if sym < len(self.source.symbols) else f"#{sym}"
                log.warning(
                    "%s: record seq %d (%s, ts_ns %d) dropped: %s (bid %r, ask %r, last %r)",
                    self._where, int(t["seq"]), name, int(t["ts_ns"]), why,
                    float(t["bid"]), float(t["ask"]), float(t["last_price"]),
                )  # fmt: skip
        return np.delete(chunk, bad)

    def __iter__(self) -> Iterator[np.ndarray]:
        first_ts: int | None = None
        start_clock = 0
        while True:
            last_ts, count = 0, 0
            # Highest ts_ns yielded so far: a record stamped earlier than one already sent
            # (sources are not always monotonic) is due at once, not "in the past".
            high = first_ts or 0
            for records in self._chunks():
                ts = records["ts_ns"]
                if first_ts is None:
                    first_ts, high, start_clock = int(ts[0]), int(ts[0]), self._clock()
                last_ts, count = int(ts[-1]), count + len(records)
                if self.pace == "fast":
                    for start in range(0, len(records), self.batch_size):
                        yield records[start : start + self.batch_size]
                else:
                    high = yield from self._paced(records, first_ts, start_clock, high)
            if self._bad_pass:
                log.warning(
                    "%s: pass %d dropped %d records with prices or sizes no market prints (%s)",
                    self._where, self.passes + 1, self._bad_pass,
                    ", ".join(f"{k} {v}" for k, v in sorted(self.bad.items())),
                )  # fmt: skip
                self._bad_pass = 0
            if not self.loop or first_ts is None:
                return
            if self.passes == 0:
                span = last_ts - first_ts
                self._period_ns = span + max(1, span // max(1, count - 1))
            self.passes += 1

    def _paced(
        self, records: np.ndarray, first_ts: int, start_clock: int, high: int
    ) -> Iterator[np.ndarray]:
        """Batches of one chunk at the recorded pace; returns the new high-water ts."""
        ts = records["ts_ns"]
        cursor, n = 0, len(records)
        while cursor < n:
            # File time that is due now, for the current pass.
            due = first_ts + self._clock() - start_clock - self.ts_offset_ns
            window = np.maximum.accumulate(np.maximum(ts[cursor : cursor + self.batch_size], high))
            end = cursor + int(np.searchsorted(window, due, side="right"))
            if end == cursor:
                wait_ns = int(window[0]) - due
                if wait_ns > self.max_wait_ns:
                    self._sleep(self.max_wait_ns / 1e9)
                    yield records[cursor:cursor]
                else:
                    self._sleep(wait_ns / 1e9)
                continue
            high = int(window[end - cursor - 1])
            yield records[cursor:end]
            cursor = end
        return high

    def write(self, out: np.ndarray, batch: np.ndarray, now_ns: int | None) -> None:
        """Copy ``batch`` (a view from this feed) into ``out[:len(batch)]``, every field but
        ``seq``: symbols mapped to the config's indexes, ts_ns shifted for the current
        pass, recv_ns = ``now_ns`` (None: the recorded recv_ns, for a run on the data's
        clock). Write each batch before taking the next."""
        if out.dtype != TICK or len(out) < len(batch):
            raise ValueError(f"need {len(batch)} TICK records, got {len(out)} of {out.dtype}")
        dst = out[: len(batch)]
        dst["ts_ns"] = batch["ts_ns"] + self.ts_offset_ns
        dst["recv_ns"] = batch["recv_ns"] + self.ts_offset_ns if now_ns is None else now_ns
        for name in ("bid", "ask", "last_price", "bid_size", "ask_size", "last_size"):
            dst[name] = batch[name]
        dst["symbol"] = self.symbol_map[batch["symbol"]]
        dst["kind"] = batch["kind"]
        dst["side"] = batch["side"]


def bad_ticks(ticks: np.ndarray) -> np.ndarray:
    """Mask of the records no market could have printed: a price or size that is NaN,
    infinite or negative, a crossed book (bid above ask, both quoted), or a trade without a
    price. Zero is an empty side, and sound."""
    bad = np.zeros(len(ticks), bool)
    with np.errstate(invalid="ignore"):
        for name in (*_PRICES, *_SIZES):
            v = ticks[name]
            bad |= ~(v >= 0) | (v == np.inf)  # NaN compares False
        bid, ask = ticks["bid"], ticks["ask"]
        bad |= (bid > 0) & (ask > 0) & (bid > ask)
        bad |= (ticks["kind"] == TickKind.TRADE) & ~(ticks["last_price"] > 0)
    return bad


def why_bad(t: np.void) -> str:
    """What ``bad_ticks`` found wrong with one record."""
    for name in (*_PRICES, *_SIZES):
        v = float(t[name])
        if not np.isfinite(v):
            return f"{name} not finite"
        if v < 0:
            return f"negative {name}"
    if 0 < t["ask"] < t["bid"]:
        return "crossed book"
    return "trade without a price"

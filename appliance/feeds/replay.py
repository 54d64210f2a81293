"""Replay of a recorded tick file, as fast as possible or at the recorded pace.

Iterating a ReplayFeed yields zero-copy views of the file's records; ``write`` then copies
a view into the ring's slots, mapping the file's symbol indexes to the config's (by name)
and stamping recv_ns. With ``loop``, the file starts over at its end and ts_ns is shifted
by the recording's span each time round, so event time keeps increasing.

At recorded pace a batch holds the records whose ts_ns is due by now (relative to the
first record, anchored when iteration starts), at most ``batch_size``. While nothing is
due the iterator sleeps, but never longer than ``max_wait_s`` before yielding an empty
batch, so the feed worker keeps heartbeating through gaps in the recording.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np

from appliance.feeds.tickfile import TickFileReader
from appliance.model.records import TICK

Pace = Literal["recorded", "fast"]


class ReplayError(ValueError):
    """A tick file that does not fit the config (e.g. a symbol the config lacks)."""


class ReplayFeed:
    """Batches of a recorded tick file (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        symbols: Sequence[str],
        *,
        pace: Pace = "recorded",
        loop: bool = False,
        batch_size: int = 1024,
        max_wait_s: float = 0.1,
        clock: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if pace not in ("recorded", "fast"):
            raise ValueError(f"pace must be 'recorded' or 'fast', got {pace!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.reader = TickFileReader(path)
        index = {name: i for i, name in enumerate(symbols)}
        unknown = [name for name in self.reader.symbols if name not in index]
        if unknown:
            raise ReplayError(
                f"{self.reader.path}: symbols {unknown} are not in the config's symbols "
                f"{list(symbols)}"
            )
        #: File symbol index -> config symbol index.
        self.symbol_map = np.array([index[name] for name in self.reader.symbols], np.uint16)
        self.pace = pace
        self.loop = loop
        self.batch_size = batch_size
        self.max_wait_ns = int(max_wait_s * 1e9)
        self._clock = clock
        self._sleep = sleep
        ts = self.reader.records["ts_ns"]
        # Shift of ts_ns per pass over the file: its span plus one mean tick interval.
        span = int(ts[-1]) - int(ts[0]) if len(ts) > 1 else 0
        self._period_ns = span + max(1, span // max(1, len(ts) - 1))
        #: Completed passes over the file (ts_ns of the current one is shifted by
        #: passes * the recording's period).
        self.passes = 0

    @property
    def ts_offset_ns(self) -> int:
        """What ``write`` adds to ts_ns: shifts the current pass after the earlier ones."""
        return self.passes * self._period_ns

    def __iter__(self) -> Iterator[np.ndarray]:
        records = self.reader.records
        n = len(records)
        if n == 0:
            return
        ts = records["ts_ns"]
        first_ts = int(ts[0])
        start_clock = self._clock()
        # Highest ts_ns yielded so far: a record stamped earlier than one already sent
        # (sources are not always monotonic) is due at once, not "in the past".
        high = first_ts
        while True:
            cursor = 0
            while cursor < n:
                if self.pace == "fast":
                    end = min(n, cursor + self.batch_size)
                else:
                    # File time that is due now, for the current pass.
                    due = first_ts + self._clock() - start_clock - self.ts_offset_ns
                    window = np.maximum.accumulate(
                        np.maximum(ts[cursor : cursor + self.batch_size], high)
                    )
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
            if not self.loop:
                return
            self.passes += 1
            high = first_ts

    def write(self, out: np.ndarray, batch: np.ndarray, now_ns: int) -> None:
        """Copy ``batch`` (a view from this feed) into ``out[:len(batch)]``, every field but
        ``seq``: symbols mapped to the config's indexes, ts_ns shifted for the current
        pass, recv_ns = ``now_ns``. Write each batch before taking the next."""
        if out.dtype != TICK or len(out) < len(batch):
            raise ValueError(f"need {len(batch)} TICK records, got {len(out)} of {out.dtype}")
        dst = out[: len(batch)]
        dst["ts_ns"] = batch["ts_ns"] + self.ts_offset_ns
        dst["recv_ns"] = now_ns
        for name in ("bid", "ask", "last_price", "bid_size", "ask_size", "last_size"):
            dst[name] = batch[name]
        dst["symbol"] = self.symbol_map[batch["symbol"]]
        dst["kind"] = batch["kind"]
        dst["side"] = batch["side"]

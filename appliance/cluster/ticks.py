"""Market data over NATS: tick runs out of one ring, and what goes into another ring.

The bridge publishes the ring's records as they are (64-byte TICK rows, the ring's own
sequence numbers), one message per run of consecutive records. A subscriber keeps the
numbering too, so it knows exactly what it missed: :class:`TickSequencer` turns each run
received into the records to write, preceded by GAP ticks where ticks are missing.

A gap is flagged as the ccxt feed flags a lost connection (``model.records.TickKind.GAP``):
one GAP tick per symbol, prices and sizes 0 (the market is unknown until the symbol's next
quote), here numbered with the first missing sequence number. While the source runs on, the
next tick's sequence number says how many are missing; the mirror counts them exactly
(``net_missing``) and logs the source restarting, where the numbering starts again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.cluster.wire import Run, WireError, decode_run, fingerprint, run_headers
from appliance.model.records import TICK, TickKind

# Most ticks per message: 256 KiB of payload, well under NATS's default 1 MiB limit.
MAX_TICKS = 4096


def symbols_layout(symbols: Sequence[str]) -> str:
    """The layout fingerprint of tick runs: which instrument table the indexes point into."""
    return fingerprint(["ticks", *symbols])


def tick_headers(source: str, epoch: int, rows: np.ndarray, layout: str) -> dict[str, str]:
    """Headers of a run of ring records; its msg id names the run (source, epoch, seqs)."""
    first, n = int(rows["seq"][0]), len(rows)
    return run_headers(source, epoch, first, n, layout, f"{source}.{epoch}.{first}+{n}")


def decode_ticks(data: bytes, headers: Mapping[str, str] | None, layout: str) -> Run:
    """A tick run, checked for size, numbering and the instrument table it was made for."""
    run = decode_run(data, headers, TICK, "tick message", "seq")
    if run.layout != layout:
        raise WireError(
            f"tick message from {run.source!r} was made for another symbol table "
            f"(layout {run.layout}, ours {layout}): the instances' [[symbols]] must match"
        )
    return run


def gap_ticks(seq: int, n_symbols: int, now_ns: int) -> np.ndarray:
    """One GAP tick per symbol, numbered ``seq`` (the first missing sequence number)."""
    out = np.zeros(n_symbols, TICK)
    out["seq"] = seq
    out["ts_ns"] = out["recv_ns"] = now_ns
    out["symbol"] = np.arange(n_symbols)
    out["kind"] = TickKind.GAP
    return out


@dataclass
class TickSequencer:
    """Where the subscriber is in the source's numbering, and what each run adds.

    ``epoch`` is the lifetime of the source's ring (None: unknown, e.g. after a restart
    whose last message the stream no longer holds) and ``next_seq`` the seq expected next
    (None: nothing expected yet, a fresh subscriber).
    """

    n_symbols: int
    epoch: int | None = None
    next_seq: int | None = None
    gaps: int = 0  # gaps flagged
    missing: int = 0  # ticks known to be missing (gaps of unknown size not counted)
    restarts: int = 0  # gaps where the source's numbering started again (or was unknown)

    def accept(self, run: Run, now_ns: int) -> np.ndarray:
        """The records to write for ``run``: its unseen rows, after GAP ticks if any are
        missing before them. Rows already written (an overlap) are dropped."""
        rows = run.rows
        gap = None
        if self.next_seq is None:
            pass  # a fresh subscriber has lost nothing
        elif self.epoch is None or run.epoch != self.epoch:
            # The source restarted (its numbering starts again), or we cannot tell.
            gap = gap_ticks(self.next_seq, self.n_symbols, now_ns)
            self.restarts += 1
        elif run.first > self.next_seq:
            gap = gap_ticks(self.next_seq, self.n_symbols, now_ns)
            self.missing += run.first - self.next_seq
        elif run.first < self.next_seq:
            rows = rows[rows["seq"] >= self.next_seq]
        self.epoch = run.epoch
        self.next_seq = max(self.next_seq or 0, run.end) if gap is None else run.end
        if gap is None:
            return rows
        self.gaps += 1
        return np.concatenate([gap, rows])

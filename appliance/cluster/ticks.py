"""Market data over NATS: tick runs out of one ring, and what goes into another ring.

The bridge publishes the ring's records as they are (64-byte TICK rows, the ring's own
sequence numbers), one message per run of consecutive records. A subscriber keeps the
numbering too, so it knows exactly what it missed: :class:`TickSequencer` turns each run
received into the records to write, preceded by a GAP record (``model.records.gap_tick``)
where ticks are missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.cluster.wire import Run, WireError, decode_run, fingerprint, run_headers
from appliance.model.records import TICK, gap_tick

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


@dataclass
class TickSequencer:
    """Where the subscriber is in the source's numbering, and what each run adds.

    ``epoch`` is the lifetime of the source's ring (None: unknown, e.g. after a restart
    whose last message the stream no longer holds) and ``next_seq`` the seq expected next
    (None: nothing expected yet, a fresh subscriber).
    """

    epoch: int | None = None
    next_seq: int | None = None
    gaps: int = 0  # GAP records produced
    missing: int = 0  # ticks known to be missing (gaps of unknown size not counted)

    def accept(self, run: Run, now_ns: int) -> np.ndarray:
        """The records to write for ``run``: its unseen rows, after a GAP record if any are
        missing before them. Rows already written (an overlap) are dropped."""
        rows = run.rows
        gap = None
        if self.next_seq is None:
            pass  # a fresh subscriber has lost nothing
        elif self.epoch is None or run.epoch != self.epoch:
            # The source restarted (its numbering starts again), or we cannot tell.
            gap = gap_tick(self.next_seq, None, now_ns)
        elif run.first > self.next_seq:
            missing = run.first - self.next_seq
            gap = gap_tick(self.next_seq, missing, now_ns)
            self.missing += missing
        elif run.first < self.next_seq:
            rows = rows[rows["seq"] >= self.next_seq]
        self.epoch = run.epoch
        self.next_seq = max(self.next_seq or 0, run.end) if gap is None else run.end
        if gap is None:
            return rows
        self.gaps += 1
        return np.concatenate([gap, rows])

"""Which intents the journal already holds: re-delivered intents are recognised, not
journaled twice (after a crash of the consumer, the queue gives them again)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from appliance.trading.journal import Journal


class Seen:
    """Per host, a high-water mark of the seqs journaled in the epoch, and the journal for
    anything at or below it."""

    def __init__(self, journal: Journal, marks: Mapping[int, int]) -> None:
        self.journal = journal
        self.marks = dict(marks)  # per host, the highest seq journaled in the epoch

    def fresh(self, intents: np.ndarray) -> np.ndarray:
        """Mask of the intents not yet journaled (first copy within the batch).

        Fast path: a host's seqs all above its mark and increasing (a FIFO queue delivering
        new records) need no lookup; otherwise the journal is asked.
        """
        keep = np.ones(len(intents), bool)
        host = intents["host"]
        seq = intents["seq"].astype(np.int64)
        for h in np.unique(host).tolist():
            idx = np.flatnonzero(host == h)
            s = seq[idx]
            mark = self.marks.get(h, -1)
            if s[0] > mark and (len(s) == 1 or bool(np.all(s[1:] > s[:-1]))):
                continue
            old = self.journal.reads.journaled_seqs(self.journal.epoch, h, s[s <= mark].tolist())
            seen: set[int] = set()
            for j, q in zip(idx.tolist(), s.tolist(), strict=True):
                if q in old or q in seen:
                    keep[j] = False
                seen.add(q)
        return keep

    def journaled(self, intents: np.ndarray) -> None:
        """``intents`` are journaled now: raise the marks."""
        for h, s in zip(intents["host"].tolist(), intents["seq"].tolist(), strict=True):
            if s > self.marks.get(h, -1):
                self.marks[h] = s

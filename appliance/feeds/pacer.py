"""Pacing a writer to a configured records-per-second rate."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Spreads ``rate`` records per second over time; 0 means unpaced.

    Records go out in batches of at least half a millisecond's worth (or a whole batch):
    sleeping for every few records would cost more in timer slack than it paces.
    """

    MIN_SPAN_S = 0.0005
    MAX_SLEEP_S = 0.005

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self._t0 = self._clock()
        self._sent = 0

    def allowance(self, batch: int) -> int:
        """How many records may go now (sleeps briefly when too few may)."""
        if self.rate <= 0:
            return batch
        due = int((self._clock() - self._t0) * self.rate) - self._sent
        enough = min(batch, max(1, int(self.rate * self.MIN_SPAN_S)))
        if due < enough:
            self._sleep(min(self.MAX_SLEEP_S, (enough - due) / self.rate))
            return 0
        return min(batch, due)

    def sent(self, n: int) -> None:
        self._sent += n

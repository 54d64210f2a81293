"""One agent host's populations and what passes between them and execution, without the
queues: the agent-host core that the live worker (workers/agent_host.py) and
``dynamind backtest`` (workers/backtest.py) both drive, so a backtest decides and learns
exactly as a live host does.

``decide`` runs every population over a tick batch and returns their intents as INTENT
records (host, population and creation time written; ``seq`` is the driver's: the intent
queue stamps it live, the backtest numbers them itself). ``deliver`` hands each population
the reports about its agents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from appliance.agents.base import Population, TickBatch
from appliance.model.records import INTENT, REPORT, TICK


class HostCore:
    def __init__(self, host: int, populations: Sequence[Population]) -> None:
        self.host = host
        self.populations = list(populations)
        self._buf = np.zeros(4096, INTENT)

    def prime(self, now_ns: int) -> None:
        """Run every population over an empty tick batch and an empty report batch: that
        builds its compiled kernels (or loads them from numba's cache) now, not in the
        first real batch. Nothing happens to the agents."""
        no_ticks = TickBatch.from_ticks(np.zeros(0, TICK))
        no_reports = np.zeros(0, REPORT)
        for pop in self.populations:
            pop.step(no_ticks, now_ns)
            pop.on_reports(no_reports)

    def decide(
        self, batch: TickBatch, now_ns: int, clock: Callable[[], int], emit: bool = True
    ) -> tuple[np.ndarray, int]:
        """(intents, signals): every population decides on every tick of ``batch``; their
        intents in population order, stamped ``clock()`` as each population's are written
        (none when not ``emit``: a warm-up steps the state only). The records are a view of
        a buffer that the next call reuses."""
        signals = 0
        n = 0
        for p, pop in enumerate(self.populations):
            before = pop.counters["signals"]
            intents = pop.step(batch, now_ns)
            signals += pop.counters["signals"] - before
            k = len(intents)
            if not emit or k == 0:
                continue
            if n + k > len(self._buf):
                grown = np.zeros(max(2 * len(self._buf), n + k), INTENT)
                grown[:n] = self._buf[:n]
                self._buf = grown
            intents.write(self._buf[n:], population=p, host=self.host, created_ns=clock())
            n += k
        return self._buf[:n], signals

    def deliver(self, reports: np.ndarray) -> None:
        """Each population's reports (REPORT records of this host), in their order."""
        if len(reports) == 0:
            return
        pops = reports["population"]
        for p, pop in enumerate(self.populations):
            mine = reports[pops == p]
            if len(mine):
                pop.on_reports(mine)

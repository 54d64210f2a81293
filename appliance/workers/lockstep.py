"""`dynamind backtest`: the whole appliance on recorded data, in one process, in lockstep.

The same objects the workers compose from the same config (the replay feed, each host's
agent populations, the execution engine with its risk checks, netting, paper venue and
SQLite journal, and the trading metrics) are driven batch by batch in the order the live
pipeline gives them: ticks to execution (quotes, resting fills) and to the agents, the
agents' intents to execution, execution's reports back to the agents. Run as processes,
that interleaving depends on the scheduler; here it is fixed, so the same data, config and
seeds give the same journal, row for row.

Every time in the journal comes from the data's clock (the recorded ``recv_ns`` of the
latest tick), never from the wall clock: ``created_ns`` of intents and orders, fills' and
reports' ``ts_ns``, the run's start. A backtest's journal, venue state and report live in
its output folder, which it starts afresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from appliance.agents import Population, TickBatch
from appliance.agents.host_core import HostCore
from appliance.config import Config
from appliance.feeds.replay import ReplayFeed
from appliance.model.records import INTENT, TICK
from appliance.trading.engine import EngineStatus
from appliance.trading.metrics import TradingMetrics
from appliance.workers import compose

JOURNAL = "journal.sqlite"
VENUE = "paper_venue.sqlite"
EPOCH = "backtest"

#: progress(ticks done, ticks total or 0 when unknown).
Progress = Callable[[int, int], None]


@dataclass
class BacktestResult:
    """What a run leaves for its report."""

    config: Config
    data: Path
    out: Path
    metrics: TradingMetrics
    populations: list[list[Population]]  # per host
    ticks: int = 0
    intents: int = 0
    wall_s: float = 0.0
    first_ns: int = 0
    last_ns: int = 0
    engine_status: EngineStatus | None = None
    dropped: dict[str, int] = field(default_factory=dict)  # records of garbage, by reason

    @property
    def journal(self) -> Path:
        return self.out / JOURNAL

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.wall_s if self.wall_s > 0 else 0.0


class _DataClock:
    """The backtest's clock: the recorded recv_ns of the latest tick."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class Backtest:
    """One backtest run (see the module docstring)."""

    def __init__(
        self,
        cfg: Config,
        data: str | Path,
        out: str | Path,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.clock = _DataClock()
        self.feed = ReplayFeed(
            data, cfg.symbol_names, pace="fast", batch_size=cfg.feed.batch_size,
            since_ns=since_ns, until_ns=until_ns,
        )  # fmt: skip
        for name in (JOURNAL, VENUE):  # a backtest starts afresh
            for suffix in ("", "-wal", "-shm"):
                (self.out / (name + suffix)).unlink(missing_ok=True)
        # A backtest's journal is reproducible from its data: no fsync per commit.
        self.engine = compose.execution_engine(
            cfg, journal_path=self.out / JOURNAL, venue_path=self.out / VENUE,
            clock=self.clock, synchronous="NORMAL",
        )  # fmt: skip
        self.hosts = [HostCore(h, compose.host_populations(cfg, h)) for h in range(len(cfg.hosts))]
        self.populations = [core.populations for core in self.hosts]
        self.metrics = TradingMetrics(
            cfg.universe(), cfg.metrics.sample_interval_s, keep_history=True
        )
        self.result = BacktestResult(cfg, Path(data), self.out, self.metrics, self.populations)
        self._seq = [0] * len(cfg.hosts)  # next intent seq per host
        self._ticks = np.zeros(cfg.feed.batch_size, TICK)

    @property
    def total(self) -> int:
        """Ticks in the source (before any time range): the progress bar's end."""
        return self.feed.source.count()

    def run(self, progress: Progress | None = None, total: int = 0) -> BacktestResult:
        r = self.result
        started = time.perf_counter()
        for batch in self.feed:
            ticks = self._ticks[: len(batch)]
            self.feed.write(ticks, batch, None)
            ticks["seq"] = np.arange(r.ticks, r.ticks + len(batch))
            self.step(ticks)
            r.ticks += len(batch)
            if progress is not None:
                progress(r.ticks, total)
        if not r.first_ns:
            raise ValueError(f"{r.data}: no ticks to run on (in the chosen time range)")
        self.engine.record_drained(dict(enumerate(self._seq)))
        r.wall_s = time.perf_counter() - started
        r.intents = sum(self._seq)
        r.engine_status = self.engine.status()
        r.dropped = dict(self.feed.bad)
        self.engine.close()
        return r

    def step(self, ticks: np.ndarray) -> None:
        """One batch through the appliance: execution sees the ticks, agents decide,
        execution takes their intents, agents get the answers."""
        now = int(ticks["recv_ns"][-1])
        r = self.result
        if not r.first_ns:  # the run begins at the data's first tick
            r.first_ns = self.clock.now = int(ticks["recv_ns"][0])
            self.engine.recover(EPOCH)
        self.clock.now = max(self.clock.now, now)
        r.last_ns = self.clock.now
        self.metrics.on_ticks(ticks)
        self._deliver(self.engine.on_ticks(ticks))
        intents = self._decide(ticks)
        if len(intents):
            self.metrics.on_intents(intents)
            self._deliver(self.engine.process(intents))

    def _decide(self, ticks: np.ndarray) -> np.ndarray:
        """Every host decides as a live one does (agents/host_core.py); the intents are
        numbered per host as its queue would number them."""
        now = self.clock.now
        batch = TickBatch.from_ticks(ticks)  # one copy, shared by the populations
        out = []
        for h, core in enumerate(self.hosts):
            intents, _ = core.decide(batch, now, self.clock)
            n = len(intents)
            if n:
                buf = intents.copy()
                buf["seq"] = np.arange(self._seq[h], self._seq[h] + n)
                self._seq[h] += n
                out.append(buf)
        return np.concatenate(out) if out else np.zeros(0, INTENT)

    def _deliver(self, reports: dict[int, np.ndarray]) -> None:
        if not reports:
            return
        self.metrics.on_reports(reports)
        for h, rep in reports.items():
            self.hosts[h].deliver(rep)

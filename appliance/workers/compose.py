"""Composition from Config: the plain domain objects a worker runs, built from its config.

This is the one place where config tables become constructor arguments; everything below
the workers takes plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from appliance.agents import Population, make_population
from appliance.config import Config
from appliance.feeds.replay import ReplayFeed
from appliance.feeds.synthetic import SyntheticFeed
from appliance.model.enums import TradingState
from appliance.trading.engine import EngineConfig, ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskLimits
from appliance.venues.paper import PaperVenue


def risk_limits(cfg: Config) -> dict[str, RiskLimits]:
    return {s.name: RiskLimits(s.max_position, s.max_order_notional) for s in cfg.symbols}


def agent_counts(cfg: Config) -> dict[tuple[int, int], int]:
    """Agents per (host, population): the layout the journal records with each run."""
    return {
        (h, p): pop.agents
        for h, host in enumerate(cfg.hosts)
        for p, pop in enumerate(host.populations)
    }


def execution_engine(
    cfg: Config,
    *,
    journal_path: Path | None = None,
    venue_path: Path | None = None,
    clock: Callable[[], int] | None = None,
    synchronous: str = "FULL",
) -> ExecutionEngine:
    """The engine of an appliance config, with its journal and paper venue files (the
    config's unless given) on ``clock`` (default: the wall clock)."""
    names = cfg.symbol_names
    journal_path = journal_path or cfg.journal_path
    venue_path = venue_path or cfg.venue_state_path
    for path in (journal_path, venue_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    timed = {} if clock is None else {"clock": clock}
    engine = ExecutionEngine(
        names,
        risk_limits(cfg),
        Journal(journal_path, synchronous=synchronous),
        PaperVenue(
            venue_path,
            len(names),
            lot_size=[s.lot_size for s in cfg.symbols],
            taker_bps=cfg.execution.taker_fee_bps,
            maker_bps=cfg.execution.maker_fee_bps,
            **timed,
        ),
        EngineConfig(
            lot_sizes={s.name: s.lot_size for s in cfg.symbols},
            internal_fee_bps=cfg.execution.internal_fee_bps,
        ),
        agents=agent_counts(cfg),
        **timed,
    )
    engine.set_trading_state(TradingState(cfg.trading.state))
    return engine


def host_populations(cfg: Config, host: int, xp: ModuleType) -> list[Population]:
    """The agent populations of host ``host``, on the array module ``xp``."""
    return [
        make_population(
            pop.kind,
            pop.agents,
            cfg.population_symbols(host, p),
            pop.params,
            cfg.population_seed(host, p),
            xp,
        )
        for p, pop in enumerate(cfg.hosts[host].populations)
    ]


def synthetic_feed(cfg: Config) -> SyntheticFeed:
    f = cfg.feed
    return SyntheticFeed(cfg.symbols, f.seed, f.trade_ratio, f.volatility, f.spread_bps)


def replay_feed(cfg: Config) -> ReplayFeed:
    f = cfg.feed
    if f.path is None:
        raise ValueError("the replay feed needs feed.path")
    return ReplayFeed(f.path, cfg.symbol_names, pace=f.pace, loop=f.loop, batch_size=f.batch_size)

"""Composition from Config: the plain domain objects a worker runs, built from its config.

This is the one place where config tables become constructor arguments; everything below
the workers takes plain values.
"""

from __future__ import annotations

from pathlib import Path

import ccxt.pro

from appliance.config import CcxtConfig, Config
from appliance.feeds.ccxt_feed import CcxtFeed
from appliance.feeds.replay import ReplayFeed
from appliance.feeds.synthetic import SyntheticFeed
from appliance.markets import ExchangeSettings, load_credentials, make_exchange
from appliance.markets.connect import exchange_class
from appliance.model.enums import TradingState
from appliance.trading.engine import EngineConfig, ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskLimits
from appliance.venues.base import Venue
from appliance.venues.ccxt_state import CcxtVenueState
from appliance.venues.ccxt_venue import CcxtVenue
from appliance.venues.ccxt_watch import TradeWatcher
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


def execution_engine(cfg: Config) -> ExecutionEngine:
    """The engine of an appliance config, with its journal and paper venue files."""
    names = cfg.symbol_names
    for path in (cfg.journal_path, cfg.venue_state_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = ExecutionEngine(
        names,
        risk_limits(cfg),
        Journal(cfg.journal_path),
        venue(cfg),
        EngineConfig(
            lot_sizes={s.name: s.lot_size for s in cfg.symbols},
            internal_fee_bps=cfg.execution.internal_fee_bps,
        ),
        agents=agent_counts(cfg),
    )
    engine.set_trading_state(TradingState(cfg.trading.state))
    return engine


def venue(cfg: Config) -> Venue:
    """The configured venue, started (a ccxt venue has loaded and checked its markets)."""
    if cfg.execution.venue == "ccxt":
        return ccxt_venue(cfg)
    return PaperVenue(
        cfg.venue_state_path,
        len(cfg.symbols),
        lot_size=[s.lot_size for s in cfg.symbols],
        taker_bps=cfg.execution.taker_fee_bps,
        maker_bps=cfg.execution.maker_fee_bps,
    )


def ccxt_venue(cfg: Config) -> CcxtVenue:
    t = cfg.execution.ccxt
    if t is None:
        raise ValueError("the ccxt venue needs execution.ccxt")
    settings = exchange_settings(t)
    pro = t.exchange in ccxt.pro.exchanges
    watch = t.updates == "watch" or (
        t.updates == "auto" and pro and exchange_class(t.exchange, True)().has.get("watchMyTrades")
    )
    watcher = None
    if watch:
        watcher = TradeWatcher(
            lambda: make_exchange(settings, pro=True), settings.credentials.scrub
        )
    v = CcxtVenue(
        make_exchange(settings, pro=False),
        instruments(cfg),
        CcxtVenueState(cfg.venue_state_path),
        settings.credentials,
        watcher=watcher,
        retries=t.retries,
        retry_backoff_s=t.retry_backoff_s,
        poll_interval_s=t.poll_interval_s,
    )
    v.start()
    return v


def synthetic_feed(cfg: Config) -> SyntheticFeed:
    f = cfg.feed
    return SyntheticFeed(cfg.symbols, f.seed, f.trade_ratio, f.volatility, f.spread_bps)


def replay_feed(cfg: Config) -> ReplayFeed:
    f = cfg.feed
    if f.path is None:
        raise ValueError("the replay feed needs feed.path")
    return ReplayFeed(f.path, cfg.symbol_names, pace=f.pace, loop=f.loop, batch_size=f.batch_size)


def exchange_settings(table: CcxtConfig) -> ExchangeSettings:
    """A config's ccxt table as plain settings, keys read from their file or environment."""
    return ExchangeSettings(
        table.exchange,
        table.urls,
        table.options,
        table.markets_file,
        table.sandbox,
        load_credentials(table.credentials_file, table.credentials_env),
    )


def instruments(cfg: Config) -> list[tuple[str, float, float]]:
    return [(s.name, s.tick_size, s.lot_size) for s in cfg.symbols]


def ccxt_feed(cfg: Config) -> CcxtFeed:
    f = cfg.feed
    if f.ccxt is None:
        raise ValueError("the ccxt feed needs feed.ccxt")
    exchange = make_exchange(exchange_settings(f.ccxt), pro=True)
    return CcxtFeed(
        exchange,
        instruments(cfg),
        backoff=(f.reconnect_initial_s, f.reconnect_max_s),
        batch_size=f.batch_size,
    )

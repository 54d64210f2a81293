"""Composition from Config: the plain domain objects a worker runs, built from its config.

This is the one place where config tables become constructor arguments; everything below
the workers takes plain values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import CcxtConfig, Config, RateConfig
from appliance.feeds.replay import ReplayFeed
from appliance.feeds.synthetic import SyntheticFeed
from appliance.model.enums import TradingState
from appliance.storage.sqlite import StoreError, unwritable
from appliance.trading.account import AccountLimits, Rate
from appliance.trading.engine import EngineConfig, ExecutionEngine, Rules
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskLimits
from appliance.trading.routing import Policy
from appliance.venues.base import Venue
from appliance.venues.paper import PaperVenue

# ccxt takes seconds to import: only the workers of a live config pay for it, so the
# ccxt builders import it where they are called.
if TYPE_CHECKING:
    from appliance.agents import Population
    from appliance.feeds.ccxt_feed import CcxtFeed
    from appliance.markets import ExchangeSettings
    from appliance.venues.ccxt_venue import CcxtVenue


def rules(cfg: Config) -> Rules:
    """The pre-trade rules of a config: limits per symbol, the account's, netting."""
    r = cfg.risk

    def rate(table: RateConfig | None) -> Rate | None:
        return None if table is None else Rate(table.rate, table.burst)

    return Rules(
        limits={
            s.name: RiskLimits(
                s.max_position,
                s.max_order_notional,
                math.inf if s.max_order_qty is None else s.max_order_qty,
                s.price_band_bps,
                s.max_open_orders,
            )
            for s in cfg.symbols
        },
        account=AccountLimits(
            agent_rate=rate(r.agent_order_rate),
            rate=rate(r.order_rate),
            max_gross_exposure=math.inf if r.max_gross_exposure is None else r.max_gross_exposure,
            max_drawdown=math.inf if r.max_drawdown is None else r.max_drawdown,
            drawdown_action=TradingState(r.drawdown_action),
        ),
        policies={s.name: Policy(s.netting) for s in cfg.symbols},
        priorities={
            (h, p): pop.priority
            for h, host in enumerate(cfg.hosts)
            for p, pop in enumerate(host.populations)
        },
        priority_window_s=cfg.trading.priority_window_s,
    )


def execution_engine(
    cfg: Config,
    *,
    journal_path: Path | None = None,
    venue_path: Path | None = None,
    clock: Callable[[], int] | None = None,
    synchronous: str = "FULL",
) -> ExecutionEngine:
    """The engine of an appliance config, with its journal and venue files (the config's
    unless given) on ``clock`` (default: the wall clock)."""
    journal_path = journal_path or cfg.journal_path
    venue_path = venue_path or cfg.venue_state_path
    if problems := unwritable_files(cfg, journal_path, venue_path):
        raise StoreError("; ".join(f"{key}: {why}" for key, why in problems))
    for path in (journal_path, venue_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    timed = {} if clock is None else {"clock": clock}
    rule_set = rules(cfg)
    engine = ExecutionEngine(
        cfg.universe(),
        rule_set.limits,
        Journal(journal_path, synchronous=synchronous),
        venue(cfg, venue_path, clock),
        EngineConfig(internal_fee_bps=cfg.execution.internal_fee_bps),
        **timed,
    )
    engine.set_rules(rule_set)
    engine.set_trading_state(TradingState(cfg.trading.state))
    return engine


def unwritable_files(
    cfg: Config, journal_path: Path | None = None, venue_path: Path | None = None
) -> list[tuple[str, str]]:
    """(config key, why) for each file execution writes that it could not create or write
    (the config's paths unless given); what check-config reports and a start refuses."""
    paths = (
        ("journal_path", journal_path or cfg.journal_path),
        ("venue_state_path", venue_path or cfg.venue_state_path),
    )
    return [(key, why) for key, path in paths if (why := unwritable(path))]


def execution_files(cfg: Config) -> list[Path]:
    """The files execution writes: the journal, and the venue's state file (the paper
    venue's book, or the ccxt venue's send attempts)."""
    return [cfg.journal_path, cfg.venue_state_path]


def venue(cfg: Config, path: Path | None = None, clock: Callable[[], int] | None = None) -> Venue:
    """The configured venue, started (a ccxt venue has loaded and checked its markets);
    a paper venue keeps its state at ``path`` (default: the config's) on ``clock``."""
    if cfg.execution.venue == "ccxt":
        return ccxt_venue(cfg)
    return PaperVenue(
        path or cfg.venue_state_path,
        len(cfg.symbols),
        lot_size=[s.lot_size for s in cfg.symbols],
        taker_bps=cfg.execution.taker_fee_bps,
        maker_bps=cfg.execution.maker_fee_bps,
        **({} if clock is None else {"clock": clock}),
    )


def host_populations(cfg: Config, host: int) -> list[Population]:
    """The agent populations of host ``host``, on the configured compute backend."""
    # Imported here: the execution and feed processes compose from this module too and
    # never run agents; loading the kernels (numba) would only slow their start.
    from appliance.agents import make_population

    return [
        make_population(
            pop.kind,
            pop.agents,
            cfg.population_symbols(host, p),
            pop.params,
            cfg.population_seed(host, p),
            cfg.compute.backend,
            pop.grid,
        )
        for p, pop in enumerate(cfg.hosts[host].populations)
    ]


def ccxt_venue(cfg: Config) -> CcxtVenue:
    import ccxt.pro

    from appliance.markets import make_exchange
    from appliance.markets.connect import exchange_class
    from appliance.venues.ccxt_state import CcxtVenueState
    from appliance.venues.ccxt_venue import CcxtVenue
    from appliance.venues.ccxt_watch import TradeWatcher

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
            lambda: make_exchange(settings, pro=True),
            settings.credentials.scrub,
            sweep_interval_s=t.reconcile_interval_s,
        )
    v = CcxtVenue(
        make_exchange(settings, pro=False),
        cfg.universe().instruments,
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
    from appliance.markets import ExchangeSettings, load_credentials

    return ExchangeSettings(
        table.exchange,
        table.urls,
        table.options,
        table.markets_file,
        table.sandbox,
        load_credentials(table.credentials_file, table.credentials_env),
    )


def ccxt_feed(cfg: Config) -> CcxtFeed:
    from appliance.feeds.ccxt_feed import CcxtFeed
    from appliance.markets import make_exchange

    f = cfg.feed
    if f.ccxt is None:
        raise ValueError("the ccxt feed needs feed.ccxt")
    exchange = make_exchange(exchange_settings(f.ccxt), pro=True)
    return CcxtFeed(
        exchange,
        cfg.universe().instruments,
        backoff=(f.reconnect_initial_s, f.reconnect_max_s),
        batch_size=f.batch_size,
    )

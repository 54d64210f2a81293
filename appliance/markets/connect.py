"""Building a ccxt or ccxt.pro exchange from plain settings, and its markets.

Nothing here is specific to one exchange: the id names a ccxt class, ``urls`` is deep-merged
into the class's own (REST and websocket keys alike: testnets, proxies, a loopback
exchange), ``options`` go to the constructor. A markets file (``save_markets``) lets a start
skip the REST call for markets (``set_markets``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ccxt
import ccxt.pro

from appliance.markets.credentials import Credentials


class MarketsError(ValueError):
    """An unknown exchange, an unusable markets file, or instruments the markets refute."""


@dataclass(frozen=True)
class ExchangeSettings:
    exchange: str  # ccxt id, e.g. "binance"
    urls: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    markets_file: str | os.PathLike[str] | None = None
    sandbox: bool = False
    credentials: Credentials = field(default_factory=Credentials)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into ``base`` in place (nested dicts merged, other values replaced)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def exchange_class(exchange_id: str, pro: bool) -> type:
    module = ccxt.pro if pro else ccxt
    names = module.exchanges
    if exchange_id not in names:
        kind = "ccxt.pro (websocket)" if pro else "ccxt"
        raise MarketsError(f"{exchange_id!r} is not a {kind} exchange id")
    return getattr(module, exchange_id)


def make_exchange(settings: ExchangeSettings, *, pro: bool) -> Any:
    """A ccxt (``pro`` False: synchronous REST) or ccxt.pro exchange, markets preloaded from
    the markets file when one is set, ccxt's rate limiter on."""
    cls = exchange_class(settings.exchange, pro)
    # ccxt's debug records dump request headers, the API key among them: never below INFO.
    ccxt_log = logging.getLogger("ccxt")
    if ccxt_log.getEffectiveLevel() < logging.INFO:
        ccxt_log.setLevel(logging.INFO)
    config: dict[str, Any] = {"enableRateLimit": True, **settings.credentials.ccxt()}
    exchange = cls(config)
    deep_merge(exchange.options, settings.options)
    if settings.sandbox:
        exchange.set_sandbox_mode(True)  # swaps in the exchange's test urls (raises if none)
    deep_merge(exchange.urls, settings.urls)
    if settings.markets_file is not None:
        data = load_markets_file(settings.markets_file, settings.exchange)
        exchange.set_markets(data["markets"], data.get("currencies") or None)
    return exchange


def save_markets(exchange: Any, path: str | os.PathLike[str]) -> int:
    """Write the loaded markets of ``exchange`` to ``path``; the number of markets."""
    if not exchange.markets:
        raise MarketsError("no markets loaded to save")
    data = {
        "exchange": exchange.id,
        "saved_ns": time.time_ns(),
        "markets": exchange.markets,
        "currencies": exchange.currencies,
    }
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps(data, default=str))
    os.replace(tmp, path)
    return len(exchange.markets)


def load_markets_file(path: str | os.PathLike[str], exchange_id: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except OSError as exc:
        raise MarketsError(f"markets file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise MarketsError(f"markets file {path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("markets"), dict):
        raise MarketsError(
            f"markets file {path}: no markets (save one with 'dynamind markets save')"
        )
    if data.get("exchange") != exchange_id:
        raise MarketsError(
            f"markets file {path} holds markets of {data.get('exchange')!r}, not {exchange_id!r}"
        )
    return data


def _step(exchange: Any, precision: Any) -> float | None:
    """The grid a market precision means, as a step; None where it is not a fixed grid."""
    if precision is None:
        return None
    if exchange.precisionMode == ccxt.TICK_SIZE:
        return float(precision)
    if exchange.precisionMode == ccxt.DECIMAL_PLACES:
        return 10.0 ** -float(precision)
    return None  # SIGNIFICANT_DIGITS: the grid depends on the price


def _on_grid(size: float, step: float) -> bool:
    n = size / step
    return n >= 1 - 1e-9 and abs(n - round(n)) <= 1e-6 * max(1.0, n)


class Gridded(Protocol):
    """What the check reads of an instrument (model.instruments.Instrument, one layer up)."""

    @property
    def name(self) -> str: ...
    @property
    def tick_size(self) -> float: ...
    @property
    def lot_size(self) -> float: ...


def instrument_problems(exchange: Any, instruments: Sequence[Gridded]) -> list[tuple[int, str]]:
    """(index, message) for each instrument the exchange's loaded markets refute: an
    unknown symbol, or a tick or lot size that is not a whole multiple of the market's
    price/amount precision (orders on that grid would be refused or rounded)."""
    problems = []
    markets = exchange.markets or {}
    for i, inst in enumerate(instruments):
        name, tick, lot = inst.name, inst.tick_size, inst.lot_size
        market = markets.get(name)
        if market is None:
            problems.append((i, f"{name!r} is not a market of {exchange.id}"))
            continue
        precision = market.get("precision") or {}
        for what, size, key in (("tick_size", tick, "price"), ("lot_size", lot, "amount")):
            step = _step(exchange, precision.get(key))
            if step and math.isfinite(size) and not _on_grid(size, step):
                problems.append(
                    (i, f"{name}: {what} {size} is not a multiple of the {exchange.id} "
                        f"{key} precision {step:g}")
                )  # fmt: skip
    return problems

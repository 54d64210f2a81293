"""The REST safety net of watch mode: open orders reconciled against the exchange.

A pushed stream misses what happened before its subscription was live, and an event it
loses without a disconnect is never sent again. So, as Hummingbot and NautilusTrader do,
the orders the venue holds open are also compared with the exchange over REST: right after
each subscription becomes live and then every ``interval``. Per symbol with open orders, one
``fetch_open_orders``; an order no longer listed is fetched (``fetch_order``); an order whose
filled amount is ahead of what the venue reported has its trades fetched. What it finds goes
to the venue as ``Swept`` items; the venue drops the fills it already reported (by the
exchange's trade id), so each fill is reported once, whichever path saw it first. An
order's trades are fetched as ccxt_trades.py says; the venue takes the order for over only
once its fills add up to the filled amount (else it stays open and the next pass looks
again).

The pass runs on the watcher's event loop with its async ccxt instance (rate limited as
every ccxt request here is), never on the execution loop.
"""

from __future__ import annotations

import logging
import queue
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import ccxt

from appliance.venues.ccxt_trades import order_trades_async

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tracked:
    """An order the venue holds open, as the sweep needs it."""

    client_id: str
    symbol: str  # ccxt unified symbol
    exchange_id: str
    filled: float  # the amount of its fills the venue reported so far


@dataclass(frozen=True, slots=True)
class Swept:
    """An order found over, or filled beyond what the venue reported: the ccxt order and,
    when fills were missing, every trade of the order."""

    client_id: str
    order: dict[str, Any]
    trades: list[dict[str, Any]]


class RestSweep:
    def __init__(self) -> None:
        # replaced whole by the venue's thread (one assignment: never seen half-written)
        self.orders: tuple[Tracked, ...] = ()
        self.found: queue.SimpleQueue[Swept] = queue.SimpleQueue()
        self.passes = 0

    async def run(self, exchange: Any) -> None:
        """One pass over the orders the venue holds open (no request when there are none)."""
        by_symbol: dict[str, list[Tracked]] = defaultdict(list)
        for t in self.orders:
            by_symbol[t.symbol].append(t)
        for symbol, tracked in by_symbol.items():
            listed = {str(o["id"]): o for o in await exchange.fetch_open_orders(symbol)}
            for t in tracked:
                o = listed.get(t.exchange_id) or await self._fetch(exchange, t)
                if o is None:
                    continue
                behind = _ahead(float(o.get("filled") or 0.0), t.filled)
                if behind or o.get("status") != "open":
                    trades = await order_trades_async(exchange, o, symbol) if behind else []
                    self.found.put(Swept(t.client_id, o, trades))
        self.passes += 1

    @staticmethod
    async def _fetch(exchange: Any, t: Tracked) -> dict[str, Any] | None:
        try:
            return await exchange.fetch_order(t.exchange_id, t.symbol)
        except ccxt.OrderNotFound:
            # the restart's reconciliation settles an order the exchange lost
            log.warning("open order %s on %s: the exchange no longer knows it",
                        t.client_id, t.symbol)  # fmt: skip
            return None


def _ahead(exchange_filled: float, reported: float) -> bool:
    return exchange_filled - reported > 1e-9 * max(1.0, exchange_filled)

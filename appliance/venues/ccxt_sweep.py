"""The REST safety net of watch mode: open orders reconciled against the exchange.

A pushed stream misses what happened before its subscription was live, and an event it
loses without a disconnect is never sent again. So, as Hummingbot and NautilusTrader do,
the orders the venue holds open are also compared with the exchange over REST: right after
each subscription becomes live and then every ``interval``. Per symbol with open orders, one
``fetch_open_orders``; an order no longer listed is fetched (``fetch_order``); an order whose
filled amount is ahead of what the venue reported has its trades fetched. What it finds goes
to the venue as ``Swept`` items; the venue drops the fills it already reported (by the
exchange's trade id), so each fill is reported once, whichever path saw it first. An order's
trades can come back short of its filled amount (a default limit, an order of many trades,
an exchange slow to list them): more are fetched, page by page from the order's time, and
the venue takes the order for over only once its fills add up to the filled amount (else
it stays open and the next pass looks again).

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

log = logging.getLogger(__name__)

MAX_PAGES = 10  # of the account's trades per order and pass; the next pass looks again


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
                    trades = await _order_trades(exchange, o, symbol) if behind else []
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


def amount_tolerance(exchange: Any, symbol: str, amount: float) -> float:
    """Half the market's amount step at ``amount``: a sum of fills closer than that to an
    amount is that amount (float sums of exchange-rounded amounts are not exact)."""
    step = ((exchange.market(symbol).get("precision") or {}).get("amount")) or 0.0
    if not step:
        return 1e-9 * max(1.0, amount)
    if exchange.precisionMode == ccxt.DECIMAL_PLACES:
        step = 10.0**-step
    elif exchange.precisionMode == ccxt.SIGNIFICANT_DIGITS:
        step = abs(amount) * 10.0**-step
    return float(step) / 2


async def _order_trades(exchange: Any, o: dict[str, Any], symbol: str) -> list[dict[str, Any]]:
    """Every trade of order ``o`` the exchange lists: its order trades, then, while they add
    up to less than its filled amount, the account's trades from the order's time on, page
    after page (each starting at the last one's newest trade: ids drop the repeats)."""
    oid = str(o["id"])
    found: dict[str, dict[str, Any]] = {}
    if exchange.has.get("fetchOrderTrades"):
        found = {str(t["id"]): t for t in await exchange.fetch_order_trades(oid, symbol)}
    filled = float(o.get("filled") or 0.0)
    short = filled - amount_tolerance(exchange, symbol, filled)
    since, seen = o.get("timestamp"), set(found)
    for _ in range(MAX_PAGES):
        if sum(float(t["amount"]) for t in found.values()) >= short:
            break
        trades = await exchange.fetch_my_trades(symbol, since)
        page = [t for t in trades if str(t["id"]) not in seen]
        if not page:
            break
        seen.update(str(t["id"]) for t in page)
        found.update((str(t["id"]), t) for t in page if str(t.get("order")) == oid)
        since = max(int(t.get("timestamp") or since or 0) for t in page) or since
    return sorted(found.values(), key=lambda t: t.get("timestamp") or 0)

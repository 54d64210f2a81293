"""An order's trades, from any ccxt exchange, whole.

One answer may not hold them all (a default limit, an order of many trades, an exchange
slow to list them), and not every exchange can list one order's trades. So: the order's
own trades where the exchange has ``fetchOrderTrades``; then, while they add up to less
than the order's filled amount, the account's trades from the order's time on, page after
page (each starting at the last one's newest trade: trade ids drop the repeats), at most
``MAX_PAGES`` (the caller looks again later). Only unified ccxt methods: nothing here is
one exchange's.

The steps are written once, as a generator of requests, and driven by the venue's
synchronous ccxt instance and by the safety net's async one alike.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import ccxt

MAX_PAGES = 10  # of the account's trades per order and look

Trade = dict[str, Any]
Request = tuple[str, tuple[Any, ...]]  # a ccxt method's name and its arguments
Plan = Generator[Request, list[Trade], list[Trade]]


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


def _plan(exchange: Any, o: dict[str, Any], symbol: str) -> Plan:
    """The requests for every trade of order ``o``; returns them, oldest first."""
    oid = str(o["id"])
    found: dict[str, Trade] = {}
    if exchange.has.get("fetchOrderTrades"):
        found = {str(t["id"]): t for t in (yield ("fetch_order_trades", (oid, symbol)))}
    filled = float(o.get("filled") or 0.0)
    short = filled - amount_tolerance(exchange, symbol, filled)
    since, seen = o.get("timestamp"), set(found)
    for _ in range(MAX_PAGES):
        if sum(float(t["amount"]) for t in found.values()) >= short:
            break
        trades = yield ("fetch_my_trades", (symbol, since))
        page = [t for t in trades if str(t["id"]) not in seen]
        if not page:
            break
        seen.update(str(t["id"]) for t in page)
        found.update((str(t["id"]), t) for t in page if str(t.get("order")) == oid)
        since = max(int(t.get("timestamp") or since or 0) for t in page) or since
    return sorted(found.values(), key=lambda t: t.get("timestamp") or 0)


def order_trades(
    exchange: Any, o: dict[str, Any], symbol: str, call: Callable[..., Any]
) -> list[Trade]:
    """Every trade of ``o`` through a synchronous ccxt instance; ``call(fn, *args)`` makes
    each request (the venue's retrying reader)."""
    plan = _plan(exchange, o, symbol)
    try:
        name, args = next(plan)
        while True:
            name, args = plan.send(call(getattr(exchange, name), *args))
    except StopIteration as done:
        return done.value


async def order_trades_async(exchange: Any, o: dict[str, Any], symbol: str) -> list[Trade]:
    """Every trade of ``o`` through an async (ccxt.pro) instance."""
    plan = _plan(exchange, o, symbol)
    try:
        name, args = next(plan)
        while True:
            name, args = plan.send(await getattr(exchange, name)(*args))
    except StopIteration as done:
        return done.value

"""An order against a ccxt market's rules, before it is sent: rounded with ccxt's precision
helpers, then checked against the market's limits (amount, price, cost; the market-order
amount limits). An order that cannot be valid is rejected with the reason, never sent."""

from __future__ import annotations

import math
from typing import Any

from appliance.model.records import OrderType
from appliance.venues.base import OrderRequest


def within_limits(
    exchange: Any, symbol: str, order: OrderRequest, take_price: float
) -> tuple[float, float | None] | str:
    """(amount, price) rounded to ``symbol``'s precision, or why the order cannot be valid.
    ``take_price``: what a market order would pay (its cost is checked at it). The
    precision helpers' errors (ccxt's, ValueError, TypeError) propagate."""
    limits = exchange.market(symbol).get("limits") or {}
    amount = float(exchange.amount_to_precision(symbol, order.qty))
    price = None
    if order.order_type == OrderType.LIMIT:
        price = float(exchange.price_to_precision(symbol, order.limit_price))
    ref = price if price is not None else take_price
    checks = [
        ("amount", amount, limits.get("amount")),
        ("price", price, limits.get("price")),
        ("cost", amount * ref if math.isfinite(ref) else None, limits.get("cost")),
    ]
    if price is None:
        checks.append(("market amount", amount, limits.get("market")))
    for what, value, bounds in checks:
        lo, hi = (bounds or {}).get("min"), (bounds or {}).get("max")
        if value is None:
            continue
        if lo and value < lo:
            return f"{symbol}: {what} {value:g} below the market minimum {lo:g}"
        if hi and value > hi:
            return f"{symbol}: {what} {value:g} above the market maximum {hi:g}"
    return amount, price

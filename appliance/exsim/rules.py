"""Binance's answers to bad requests, and its symbol filters, checked exactly (Decimal).

Error codes and messages are Binance's own (the spot API's error-code list), so a client
library maps them to the same exceptions it would for the real exchange.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

ZERO = Decimal(0)


class BinanceError(Exception):
    """An error answer: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg}


def bad_signature() -> BinanceError:
    return BinanceError(-1022, "Signature for this request is not valid.")


def bad_key() -> BinanceError:
    return BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)


def mandatory(name: str) -> BinanceError:
    return BinanceError(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


def decimal_param(params: dict[str, str], name: str, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw in (None, ""):
        if required:
            raise mandatory(name)
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite():
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    return value


def fmt(x: Decimal) -> str:
    """Binance prints amounts with eight decimals."""
    return f"{x.quantize(Decimal('1e-8')):f}"


def _on_grid(value: Decimal, start: Decimal, step: Decimal) -> bool:
    return step == ZERO or (value - start) % step == ZERO


@dataclass(frozen=True)
class Filters:
    """The filters of one symbol that an order can fail (0 disables a bound, as at Binance)."""

    symbol: str
    base: str
    quote: str
    min_price: Decimal
    max_price: Decimal
    tick: Decimal
    min_qty: Decimal
    max_qty: Decimal
    step: Decimal
    market_max_qty: Decimal
    min_notional: Decimal
    notional_to_market: bool
    order_types: tuple[str, ...]

    @classmethod
    def from_info(cls, s: dict[str, Any]) -> Filters:
        f = {x["filterType"]: x for x in s["filters"]}
        price, lot = f.get("PRICE_FILTER", {}), f.get("LOT_SIZE", {})
        market_lot = f.get("MARKET_LOT_SIZE", {})
        notional = f.get("MIN_NOTIONAL") or f.get("NOTIONAL") or {}
        return cls(
            symbol=s["symbol"],
            base=s["baseAsset"],
            quote=s["quoteAsset"],
            min_price=Decimal(price.get("minPrice", "0")),
            max_price=Decimal(price.get("maxPrice", "0")),
            tick=Decimal(price.get("tickSize", "0")),
            min_qty=Decimal(lot.get("minQty", "0")),
            max_qty=Decimal(lot.get("maxQty", "0")),
            step=Decimal(lot.get("stepSize", "0")),
            market_max_qty=Decimal(market_lot.get("maxQty", "0")),
            min_notional=Decimal(notional.get("minNotional", "0")),
            notional_to_market=bool(
                notional.get("applyToMarket", notional.get("applyMinToMarket", True))
            ),
            order_types=tuple(s.get("orderTypes", ("LIMIT", "MARKET"))),
        )

    def check(self, order_type: str, qty: Decimal, price: Decimal | None, ref: Decimal) -> None:
        """Raise Binance's filter failure for an order of ``qty`` at ``price`` (a LIMIT) or
        valued at ``ref`` (a MARKET: the current price)."""
        if price is not None:
            if price <= ZERO or (self.min_price and price < self.min_price):
                raise _filter("PRICE_FILTER")
            if self.max_price and price > self.max_price:
                raise _filter("PRICE_FILTER")
            if not _on_grid(price, self.min_price, self.tick):
                raise _filter("PRICE_FILTER")
        if qty <= ZERO or qty < self.min_qty or (self.max_qty and qty > self.max_qty):
            raise _filter("LOT_SIZE")
        if not _on_grid(qty, self.min_qty, self.step):
            raise _filter("LOT_SIZE")
        if order_type == "MARKET" and self.market_max_qty and qty > self.market_max_qty:
            raise _filter("MARKET_LOT_SIZE")
        if order_type == "MARKET" and not self.notional_to_market:
            return
        value = qty * (price if price is not None else ref)
        if self.min_notional and value < self.min_notional:
            raise _filter("MIN_NOTIONAL")


def _filter(name: str) -> BinanceError:
    return BinanceError(-1013, f"Filter failure: {name}")

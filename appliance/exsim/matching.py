"""One account's orders, trades and balances, matched against the replayed books.

Matching model (documented for users of the loopback exchange):
- A MARKET order, or the marketable part of a LIMIT order, takes the replayed book's levels
  from the best price outwards (taker), at each level's price; what it takes is gone from
  the book until the replay next sets that level. A MARKET remainder beyond the book expires;
  LIMIT IOC remainders expire; FOK fills completely or expires untouched.
- A resting LIMIT order fills at its own price (maker) when the replayed book crosses it
  (ask <= buy limit, bid >= sell limit: up to the crossing levels' quantity) or a replayed
  trade prints at or through it (up to the trade's quantity). Queue position is not modelled.
- Commission: ``fee_rate`` of the quote amount of every fill, charged in the quote asset.
- Balances: every asset of the exchange starts at ``balance``; LIMIT orders lock what they
  could spend (quote for buys, base for sells), as Binance does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

from appliance.exsim.book import Book
from appliance.exsim.rules import ZERO, BinanceError, Filters, decimal_param, fmt, mandatory

Event = dict[str, Any]


@dataclass
class SimOrder:
    order_id: int
    client_id: str
    symbol: str
    side: str  # BUY / SELL
    type: str  # LIMIT / MARKET
    tif: str  # GTC / IOC / FOK (LIMIT); "" for MARKET
    qty: Decimal
    price: Decimal  # 0 for MARKET
    time: int
    status: str = "NEW"
    executed: Decimal = ZERO
    quote: Decimal = ZERO  # cumulative quote quantity
    update_time: int = 0
    locked: Decimal = ZERO  # what this order still holds locked

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.executed

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def rest(self) -> dict[str, Any]:
        """The order as GET /api/v3/order shows it."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_id, "price": fmt(self.price), "origQty": fmt(self.qty),
            "executedQty": fmt(self.executed), "cummulativeQuoteQty": fmt(self.quote),
            "status": self.status, "timeInForce": self.tif or "GTC", "type": self.type,
            "side": self.side, "stopPrice": fmt(ZERO), "icebergQty": fmt(ZERO),
            "time": self.time, "updateTime": self.update_time, "isWorking": True,
            "workingTime": self.time, "origQuoteOrderQty": fmt(ZERO),
            "selfTradePreventionMode": "NONE",
        }  # fmt: skip


@dataclass
class SimTrade:
    trade_id: int
    order: SimOrder
    price: Decimal
    qty: Decimal
    commission: Decimal
    asset: str
    maker: bool
    time: int

    def rest(self) -> dict[str, Any]:
        """The trade as GET /api/v3/myTrades shows it."""
        return {
            "symbol": self.order.symbol, "id": self.trade_id, "orderId": self.order.order_id,
            "orderListId": -1, "price": fmt(self.price), "qty": fmt(self.qty),
            "quoteQty": fmt(self.price * self.qty), "commission": fmt(self.commission),
            "commissionAsset": self.asset, "time": self.time,
            "isBuyer": self.order.side == "BUY", "isMaker": self.maker, "isBestMatch": True,
        }  # fmt: skip


@dataclass
class _Balance:
    free: Decimal
    locked: Decimal = ZERO


@dataclass
class Account:
    balances: dict[str, _Balance]
    orders: dict[int, SimOrder] = field(default_factory=dict)
    by_client: dict[tuple[str, str], SimOrder] = field(default_factory=dict)
    trades: list[SimTrade] = field(default_factory=list)

    def lock(self, asset: str, amount: Decimal) -> None:
        b = self.balances.setdefault(asset, _Balance(ZERO))
        if b.free < amount:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        b.free -= amount
        b.locked += amount

    def move(self, asset: str, free: Decimal = ZERO, locked: Decimal = ZERO) -> None:
        b = self.balances.setdefault(asset, _Balance(ZERO))
        b.free += free
        b.locked += locked


class MatchingEngine:
    """Orders of one account against ``books``; every change returns user-data events."""

    def __init__(
        self,
        filters: dict[str, Filters],
        books: dict[str, Book],
        balance: Decimal,
        fee_rate: Decimal = Decimal("0.001"),
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.filters = filters
        self.books = books
        self.fee_rate = fee_rate
        self.clock = clock
        assets = {f.base for f in filters.values()} | {f.quote for f in filters.values()}
        self.account = Account({a: _Balance(balance) for a in sorted(assets)})
        self._next_order = 1
        self._next_trade = 1

    # ---- requests ---------------------------------------------------------------------

    def new_order(self, p: dict[str, str]) -> tuple[dict[str, Any], list[Event]]:
        f = self._filters(p)
        side, otype = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL"):
            raise BinanceError(-1117, "Invalid side.")
        if otype not in ("LIMIT", "MARKET") or otype not in f.order_types:
            raise BinanceError(-1116, "Invalid orderType.")
        qty = decimal_param(p, "quantity")
        price = decimal_param(p, "price") if otype == "LIMIT" else None
        tif = p.get("timeInForce", "") if otype == "LIMIT" else ""
        if otype == "LIMIT" and tif not in ("GTC", "IOC", "FOK"):
            raise mandatory("timeInForce")
        book = self.books.get(f.symbol)
        ref = self._reference(book, side)
        f.check(otype, qty, price, ref)
        cid = p.get("newClientOrderId") or f"sim-{self._next_order}"
        acct = self.account
        if (f.symbol, cid) in acct.by_client and acct.by_client[(f.symbol, cid)].open:
            raise BinanceError(-2010, "Duplicate order sent.")
        now = self.clock()
        o = SimOrder(self._next_order, cid, f.symbol, side, otype, tif, qty, price or ZERO, now)
        o.update_time = now
        if side == "BUY":
            cost = qty * price if price is not None else _cost(book, qty)
            o.locked = cost * (1 + self.fee_rate)
            acct.lock(f.quote, o.locked)
        else:
            o.locked = qty
            acct.lock(f.base, o.locked)
        self._next_order += 1
        acct.orders[o.order_id] = o
        acct.by_client[(f.symbol, cid)] = o
        events = [self._report(o, "NEW")]
        trades = self._take(o, book, f)
        events += [self._report(o, "TRADE", t) for t in trades]
        if o.open and (otype == "MARKET" or tif in ("IOC", "FOK")):
            o.status = "EXPIRED"
            events.append(self._report(o, "EXPIRED"))
        self._release(o, f)
        events.append(self._position(f, now))
        ack = o.rest() | {"transactTime": now, "fills": [self._fill(t) for t in trades]}
        return ack, events

    def cancel(self, p: dict[str, str]) -> tuple[dict[str, Any], list[Event]]:
        f = self._filters(p)
        o = self._find(p, f.symbol)
        if o is None or not o.open:
            raise BinanceError(-2011, "Unknown order sent.")
        o.status = "CANCELED"
        o.update_time = now = self.clock()
        self._release(o, f)
        cancel_id = p.get("newClientOrderId") or f"cancel-{o.order_id}"
        answer = o.rest() | {
            "origClientOrderId": o.client_id,
            "clientOrderId": cancel_id,
            "transactTime": now,
        }
        return answer, [self._report(o, "CANCELED", cancel_id=cancel_id), self._position(f, now)]

    def query(self, p: dict[str, str]) -> dict[str, Any]:
        f = self._filters(p)
        o = self._find(p, f.symbol)
        if o is None:
            raise BinanceError(-2013, "Order does not exist.")
        return o.rest()

    def open_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._filters(p).symbol if p.get("symbol") else None
        return [
            o.rest() for o in self.account.orders.values() if o.open and symbol in (None, o.symbol)
        ]

    def all_orders(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._filters(p).symbol
        return [o.rest() for o in self.account.orders.values() if o.symbol == symbol]

    def my_trades(self, p: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self._filters(p).symbol
        order_id = int(p["orderId"]) if p.get("orderId") else None
        from_id = int(p.get("fromId") or 0)
        start = int(p.get("startTime") or 0)
        limit = min(int(p.get("limit") or 500), 1000)
        out = [
            t.rest()
            for t in self.account.trades
            if t.order.symbol == symbol
            and order_id in (None, t.order.order_id)
            and t.trade_id >= from_id
            and t.time >= start
        ]
        return out[:limit] if from_id or start else out[-limit:]

    def balances(self) -> list[dict[str, str]]:
        return [
            {"asset": a, "free": fmt(b.free), "locked": fmt(b.locked)}
            for a, b in self.account.balances.items()
        ]

    # ---- market moves -----------------------------------------------------------------

    def on_book(self, symbol: str) -> list[Event]:
        """The replay moved ``symbol``'s book: fill resting orders it crossed."""
        book, f = self.books[symbol], self.filters[symbol]
        events: list[Event] = []
        for o in self._resting(symbol):
            trades = self._take(o, book, f, at=o.price)
            if trades:
                events += [self._report(o, "TRADE", t) for t in trades]
                self._release(o, f)
                events.append(self._position(f, trades[-1].time))
        return events

    def on_trade(self, symbol: str, price: Decimal, qty: Decimal) -> list[Event]:
        """A replayed trade printed: fill resting orders at or through its price."""
        f = self.filters[symbol]
        events: list[Event] = []
        for o in self._resting(symbol):
            if qty <= ZERO:
                break
            reached = price <= o.price if o.side == "BUY" else price >= o.price
            if reached:
                t = self._trade(o, o.price, min(qty, o.remaining), maker=True)
                qty -= t.qty
                events += [self._report(o, "TRADE", t)]
                self._release(o, f)
                events.append(self._position(f, t.time))
        return events

    # ---- internals --------------------------------------------------------------------

    def _filters(self, p: dict[str, str]) -> Filters:
        symbol = p.get("symbol")
        if not symbol:
            raise mandatory("symbol")
        if symbol not in self.filters:
            raise BinanceError(-1121, "Invalid symbol.")
        return self.filters[symbol]

    def _find(self, p: dict[str, str], symbol: str) -> SimOrder | None:
        if p.get("orderId"):
            o = self.account.orders.get(int(p["orderId"]))
            return o if o is not None and o.symbol == symbol else None
        cid = p.get("origClientOrderId")
        if not cid:
            raise mandatory("orderId")
        return self.account.by_client.get((symbol, cid))

    def _resting(self, symbol: str) -> list[SimOrder]:
        return [o for o in self.account.orders.values() if o.open and o.symbol == symbol]

    @staticmethod
    def _reference(book: Book | None, side: str) -> Decimal:
        """The price a market order of ``side`` would start at (its notional's reference)."""
        best = None if book is None else book.best("asks" if side == "BUY" else "bids")
        if best is None:
            raise BinanceError(-2010, "Market is closed.")
        return best

    def _take(
        self, o: SimOrder, book: Book | None, f: Filters, at: Decimal | None = None
    ) -> list[SimTrade]:
        """Fill ``o`` against the opposite side of the book, up to its limit. ``at``: the
        price every fill gets (a resting order, maker); None: each level's (taker)."""
        if book is None or o.remaining <= ZERO:
            return []
        side = "asks" if o.side == "BUY" else "bids"
        levels = []
        for price, qty in book.walk(side):
            if o.type == "LIMIT" and (price > o.price if o.side == "BUY" else price < o.price):
                break
            levels.append((price, qty))
        if o.tif == "FOK" and sum(q for _, q in levels) < o.remaining:
            return []
        trades = []
        for price, qty in levels:
            take = min(qty, o.remaining)
            book.take(side, price, take)
            trades.append(self._trade(o, price if at is None else at, take, maker=at is not None))
            if o.remaining <= ZERO:
                break
        return trades

    def _trade(self, o: SimOrder, price: Decimal, qty: Decimal, maker: bool) -> SimTrade:
        f = self.filters[o.symbol]
        now = self.clock()
        quote = price * qty
        fee = (quote * self.fee_rate).quantize(Decimal("1e-8"), ROUND_DOWN)
        t = SimTrade(self._next_trade, o, price, qty, fee, f.quote, maker, now)
        self._next_trade += 1
        o.executed += qty
        o.quote += quote
        o.update_time = now
        o.status = "FILLED" if o.remaining <= ZERO else "PARTIALLY_FILLED"
        acct = self.account
        if o.side == "BUY":
            spent = quote + fee
            o.locked -= spent
            acct.move(f.quote, locked=-spent)
            acct.move(f.base, free=qty)
        else:
            o.locked -= qty
            acct.move(f.base, locked=-qty)
            acct.move(f.quote, free=quote - fee)
        acct.trades.append(t)
        return t

    def _release(self, o: SimOrder, f: Filters) -> None:
        """A finished order gives back what it still holds locked."""
        if o.open or o.locked == ZERO:
            return
        asset = f.quote if o.side == "BUY" else f.base
        self.account.move(asset, free=o.locked, locked=-o.locked)
        o.locked = ZERO

    @staticmethod
    def _fill(t: SimTrade) -> dict[str, Any]:
        return {
            "price": fmt(t.price),
            "qty": fmt(t.qty),
            "commission": fmt(t.commission),
            "commissionAsset": t.asset,
            "tradeId": t.trade_id,
        }

    def _report(
        self, o: SimOrder, exec_type: str, t: SimTrade | None = None, cancel_id: str = ""
    ) -> Event:
        """The executionReport event of the user-data stream."""
        return {
            "e": "executionReport", "E": self.clock(), "s": o.symbol,
            "c": cancel_id or o.client_id, "S": o.side, "o": o.type, "f": o.tif or "GTC",
            "q": fmt(o.qty), "p": fmt(o.price), "P": fmt(ZERO), "F": fmt(ZERO), "g": -1,
            "C": o.client_id if cancel_id else "", "x": exec_type, "X": o.status, "r": "NONE",
            "i": o.order_id, "l": fmt(t.qty if t else ZERO), "z": fmt(o.executed),
            "L": fmt(t.price if t else ZERO), "n": fmt(t.commission if t else ZERO),
            "N": t.asset if t else None, "T": t.time if t else o.update_time,
            "t": t.trade_id if t else -1, "I": 0, "w": o.open, "m": bool(t and t.maker),
            "M": False, "O": o.time, "Z": fmt(o.quote),
            "Y": fmt(t.price * t.qty if t else ZERO), "Q": fmt(ZERO),
        }  # fmt: skip

    def _position(self, f: Filters, now: int) -> Event:
        """The outboundAccountPosition event: the balances an order touched."""
        bal = self.account.balances
        return {
            "e": "outboundAccountPosition",
            "E": now,
            "u": now,
            "B": [
                {"a": a, "f": fmt(bal[a].free), "l": fmt(bal[a].locked)} for a in (f.base, f.quote)
            ],
        }


def _cost(book: Book | None, qty: Decimal) -> Decimal:
    """What buying ``qty`` at market costs, walking the asks (as much as the book holds)."""
    cost = ZERO
    for price, avail in book.walk("asks") if book is not None else ():
        take = min(avail, qty)
        cost += take * price
        qty -= take
        if qty <= ZERO:
            break
    return cost

"""Every pre-trade check of a batch, in order, with what each needs gathered per intent.

1. validation (risk.validate_intents): BAD_ORDER, UNKNOWN_SYMBOL;
2. per symbol, applied per agent (risk.RiskEngine): trading state, NO_MARKET,
   MAX_ORDER_QTY, MAX_NOTIONAL, PRICE_BAND, MAX_POSITION / REDUCE_ONLY, MAX_OPEN_ORDERS;
3. on symbols with the ``priority`` policy: CONFLICT (conflicts.PriorityWindow);
4. over the account (account.AccountGuard): MAX_GROSS_EXPOSURE, then ORDER_RATE last,
   so that only an intent that passes everything else takes a token.

A CANCEL intent is only validated: it never trades.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from appliance.model.records import INTENT, OrderType, RejectReason
from appliance.trading import risk_kernels as kernels
from appliance.trading.account import AccountGuard, Book
from appliance.trading.conflicts import PriorityWindow
from appliance.trading.open_orders import OpenOrders
from appliance.trading.portfolio import Portfolio
from appliance.trading.risk import Exposure, RiskEngine, RiskLimits, validate_intents
from appliance.venues.base import QuoteBook

_PASS = RejectReason.NONE


class Checked(NamedTuple):
    """A batch of fresh intents after the checks, as arrays aligned per intent."""

    reasons: np.ndarray  # RejectReason, NONE: passes
    lots: np.ndarray  # quantity on the symbol's lot grid (0 where rejected, and CANCEL)
    symbol: np.ndarray  # symbol index (0 where invalid)
    side: np.ndarray
    order_type: np.ndarray
    lot: np.ndarray  # the symbol's lot size
    price: np.ndarray  # the best price each accepts (routing.Routed.price)
    texts: dict[int, str]  # reject texts beyond the reason's name, by index


class PreTrade:
    def __init__(
        self,
        symbols: Sequence[str],
        limits: RiskLimits | Mapping[str, RiskLimits],
        lots: np.ndarray,
        quotes: QuoteBook,
        portfolio: Portfolio,
        book: OpenOrders,
    ) -> None:
        self.risk = RiskEngine(symbols, limits)
        self.account = AccountGuard()
        self.window = PriorityWindow(10**9, {})
        self.lots = lots
        self.quotes = quotes
        self.portfolio = portfolio
        self.book = book

    def prime(self) -> None:
        """Check an empty batch: that compiles the rules' kernels (or loads them from
        numba's cache) now, seconds on a fresh machine, rather than in the first batch of
        a worker that already said it is ready and must keep beating."""
        self.check(np.zeros(0, INTENT), 0, set())

    def check(self, intents: np.ndarray, now: int, priority_symbols: set[int]) -> Checked:
        reasons, lots = validate_intents(intents, self.lots)
        sym = np.where(reasons == _PASS, intents["symbol"], 0).astype(np.intp)
        side = intents["side"].astype(np.int64)
        otype = intents["order_type"]
        lot = self.lots[sym]
        q = self.quotes
        n = len(intents)
        ref, own, price, mid = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
        kernels.prices(sym, side, otype, intents["limit_price"], q.bid, q.ask, ref, own, price, mid)
        x = self._exposure(intents, reasons, lots * lot, ref, own, mid)
        reasons = self.risk.check(intents, x, reasons)
        texts: dict[int, str] = {}
        if priority_symbols:
            prio = np.flatnonzero(
                (reasons == _PASS)
                & (otype != OrderType.CANCEL)
                & np.isin(sym, list(priority_symbols))
            )
            cols = (intents["host"], intents["population"], sym, side)
            for i, text in self.window.conflicts(*cols, prio, now) if prio.size else ():
                reasons[i] = RejectReason.CONFLICT
                texts[i] = text
        book = Book(
            np.array([self.portfolio.net_position(s) for s in range(len(self.lots))]),
            *(np.array([self.book.symbol_lots(s)[k] for s in range(len(self.lots))]) * self.lots
              for k in (0, 1)),
            q.mid,
        )  # fmt: skip
        reasons = self.account.check(intents, reasons, x.qty, own, book, now)
        return Checked(reasons, lots, sym, side, otype, lot, price, texts)

    def _exposure(
        self,
        intents: np.ndarray,
        reasons: np.ndarray,
        qty: np.ndarray,
        ref: np.ndarray,
        own: np.ndarray,
        mid: np.ndarray,
    ) -> Exposure:
        """The owning agents' positions and open orders, per intent."""
        n = len(intents)
        host, pop, agent = (intents[f].tolist() for f in ("host", "population", "agent"))
        sym_l = intents["symbol"].tolist()
        lot = self.lots
        position, open_buy, open_sell, count = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
        live = (reasons == _PASS) & (intents["order_type"] != OrderType.CANCEL)
        for i in np.flatnonzero(live).tolist():
            key = (host[i], pop[i], agent[i], sym_l[i])
            position[i] = self.portfolio.position(key)
            buy, sell = self.book.exposure(key)
            open_buy[i], open_sell[i] = buy * lot[sym_l[i]], sell * lot[sym_l[i]]
            count[i] = self.book.open_count(key)
        return Exposure(qty, ref, own, mid, position, open_buy, open_sell, count)

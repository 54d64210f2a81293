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

from appliance.model.records import OrderType, RejectReason
from appliance.trading.account import AccountGuard, Book
from appliance.trading.book import OrderBook
from appliance.trading.conflicts import PriorityWindow
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
        book: OrderBook,
    ) -> None:
        self.risk = RiskEngine(symbols, limits)
        self.account = AccountGuard()
        self.window = PriorityWindow(10**9, {})
        self.lots = lots
        self.quotes = quotes
        self.portfolio = portfolio
        self.book = book

    def check(self, intents: np.ndarray, now: int, priority_symbols: set[int]) -> Checked:
        reasons, lots = validate_intents(intents, self.lots)
        sym = np.where(reasons == _PASS, intents["symbol"], 0).astype(np.intp)
        side = intents["side"].astype(np.int64)
        otype = intents["order_type"]
        lot = self.lots[sym]
        q = self.quotes
        mid = q.mid[sym]
        # A market order takes the touch and needs a two-sided quote (internal crosses
        # price at the mid).
        touch = np.where(side > 0, q.ask[sym], q.bid[sym])
        take = np.where(np.isfinite(mid), touch, np.nan)
        limit_px = intents["limit_price"]
        limit = otype == OrderType.LIMIT
        # A LIMIT order is valued at the highest price it can trade at: a buy at its limit
        # (it takes the ask only if ask <= limit, and rests at the limit); a sell at the
        # bid if that is above its limit (a marketable sell takes the bid), else its limit.
        # fmax: an unknown bid (NaN) leaves the limit.
        ref = np.where(limit, np.where(side < 0, np.fmax(limit_px, q.bid[sym]), limit_px), take)
        own = np.where(limit, limit_px, take)
        # Routing's price: the limit, bounded by the touch a marketable order would take.
        best = np.where(side > 0, np.fmin(limit_px, touch), np.fmax(limit_px, touch))
        price = np.where(limit, best, take)
        x = self._exposure(intents, reasons, lots * lot, ref, own, mid)
        reasons = self.risk.check(intents, x, reasons)
        texts: dict[int, str] = {}
        prio = np.flatnonzero(
            (reasons == _PASS) & (otype != OrderType.CANCEL) & np.isin(sym, list(priority_symbols))
        )
        if prio.size:
            cols = (intents["host"], intents["population"], sym, side)
            for i, text in self.window.conflicts(*cols, prio, now):
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

"""What the execution engine needs from a venue, and vectorised tick summaries for venues.

A venue identifies orders by the client order id the execution side chose. That id is the
whole reconciliation story: after a restart the engine asks the venue about every order it
journaled and did not see finish, and a venue refuses a second order with an id it already
knows, so a resend can never become a second trade.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.model.orders import OrderState
from appliance.model.records import TICK, RejectReason, TickKind


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as sent to the venue. qty is in base units, on the venue's lot grid."""

    client_id: str
    symbol: int
    side: int  # Side.BUY or Side.SELL
    order_type: int  # OrderType
    qty: float
    limit_price: float = 0.0


@dataclass(frozen=True, slots=True)
class VenueFill:
    """One execution reported by the venue. venue_fill_id need only be unique per order
    (client_id): the journal keys venue fills by (client_id, venue_fill_id)."""

    venue_fill_id: str
    client_id: str
    qty: float
    price: float
    fee: float  # quote currency
    maker: bool  # True: the order was resting (maker fee); False: it took liquidity
    ts_ns: int


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """The venue's view of one order.

    From ``submit`` the fills are those of that call; from ``fetch_order`` they are all the
    order's fills so far (the caller drops the ones it already applied, by fill id).
    ``duplicate`` is set when a submit was refused because the id is already known: the
    order exists at the venue, so the caller must reconcile it, not mark it rejected.
    """

    client_id: str
    state: OrderState
    filled_qty: float = 0.0
    fills: tuple[VenueFill, ...] = ()
    reason: RejectReason = RejectReason.NONE
    reason_text: str = ""
    duplicate: bool = False


class Venue(Protocol):
    """A place orders go to. Implementations: PaperVenue (simulated, persistent)."""

    def submit(self, order: OrderRequest) -> OrderStatus:
        """Send one order; the answer carries ack or reject and any immediate fills."""
        ...

    def cancel(self, client_id: str) -> OrderStatus | None:
        """Cancel a resting order; its status afterwards, or None if the id is unknown."""
        ...

    def on_ticks(self, ticks: np.ndarray) -> list[VenueFill]:
        """Market data moved: the fills of resting orders that it caused."""
        ...

    def ended(self) -> list[OrderStatus]:
        """Orders the venue found over by itself since the last call (e.g. cancelled or
        expired at an exchange); their fills come from ``on_ticks``."""
        ...

    def fetch_order(self, client_id: str) -> OrderStatus | None:
        """State and every fill of an order, or None if the venue never received it."""
        ...

    def open_orders(self) -> list[OrderStatus]:
        """Every order still resting at the venue."""
        ...

    def close(self) -> None: ...


class QuoteBook:
    """Latest best bid/ask per symbol, updated from a tick batch in one vectorised pass.

    Missing prices (a side with no orders, reported as 0 or NaN) are held as NaN so that no
    comparison against them is ever true.
    """

    def __init__(self, n_symbols: int) -> None:
        self.n_symbols = n_symbols
        self.bid = np.full(n_symbols, np.nan)
        self.ask = np.full(n_symbols, np.nan)
        self.bid_size = np.zeros(n_symbols)
        self.ask_size = np.zeros(n_symbols)
        self.ts_ns = np.zeros(n_symbols, np.int64)

    def update(self, ticks: np.ndarray) -> None:
        if ticks.dtype != TICK:
            raise TypeError(f"expected TICK records, got {ticks.dtype}")
        if len(ticks) == 0:
            return
        sym = ticks["symbol"].astype(np.intp)
        rows = np.arange(len(ticks))
        known = sym < self.n_symbols
        if not known.all():  # ticks for symbols outside the table are ignored
            sym, rows = sym[known], rows[known]
        # Last tick per symbol: max row index per symbol (ufunc.at, no sort).
        last = np.full(self.n_symbols, -1, np.int64)
        np.maximum.at(last, sym, rows)
        upd = np.flatnonzero(last >= 0)
        latest = ticks[last[upd]]
        bid, ask = latest["bid"], latest["ask"]
        self.bid[upd] = np.where(bid > 0, bid, np.nan)
        self.ask[upd] = np.where(ask > 0, ask, np.nan)
        self.bid_size[upd] = latest["bid_size"]
        self.ask_size[upd] = latest["ask_size"]
        self.ts_ns[upd] = latest["ts_ns"]

    @property
    def mid(self) -> np.ndarray:
        return (self.bid + self.ask) / 2.0

    def take_price(self, symbol: int, side: int) -> float:
        """The price a market order of this side would pay: ask for a buy, bid for a sell."""
        return float(self.ask[symbol] if side > 0 else self.bid[symbol])

    def take_size(self, symbol: int, side: int) -> float:
        return float(self.ask_size[symbol] if side > 0 else self.bid_size[symbol])


def price_extremes(ticks: np.ndarray, n_symbols: int) -> tuple[np.ndarray, np.ndarray]:
    """Per symbol, over the batch: the lowest price a seller reached and the highest a buyer
    reached, counting both trades and quotes.

    low[s] = min(every ask, every trade price); a resting buy at L is reached iff low <= L.
    high[s] = max(every bid, every trade price); a resting sell at L is reached iff high >= L.
    Symbols without ticks get +inf / -inf.
    """
    sym = ticks["symbol"].astype(np.intp)
    trade = (ticks["kind"] == TickKind.TRADE) & (ticks["last_price"] > 0)
    last = ticks["last_price"]
    ask, bid = ticks["ask"], ticks["bid"]
    lo = np.where(ask > 0, ask, np.inf)
    lo = np.where(trade, np.minimum(lo, last), lo)
    hi = np.where(bid > 0, bid, -np.inf)
    hi = np.where(trade, np.maximum(hi, last), hi)
    known = sym < n_symbols
    if not known.all():
        sym, lo, hi = sym[known], lo[known], hi[known]
    low = np.full(n_symbols, np.inf)
    high = np.full(n_symbols, -np.inf)
    np.minimum.at(low, sym, lo)
    np.maximum.at(high, sym, hi)
    return low, high

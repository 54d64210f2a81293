"""CcxtVenue: orders on a real exchange through ccxt (synchronous REST), the Venue protocol.

- Before sending, amount and price are rounded with ccxt's precision helpers and checked
  against the market's limits (amount, price, cost; the market-order amount limits): an
  order that cannot be valid is rejected with that reason and never sent (ccxt_limits.py).
- The client order id (from the journal) goes to the exchange, so a resend is recognised:
  a network error is retried (``retries`` times, backoff doubling), each attempt recorded
  in the state file, and before each retry the exchange is asked whether the order arrived.
  Any other error is the exchange's answer: a reject, never retried.
- Fills come from ccxt.pro ``watch_my_trades`` (a thread, see ccxt_watch.py) where the
  exchange has it, else by polling each open order; each carries the exchange's trade id.
  After the watcher reconnects, trades of open orders are fetched over REST before the
  next order is taken, so nothing that happened during the outage is missed. In watch mode
  a REST safety net (ccxt_sweep.py, on the watcher's thread) also reconciles the open
  orders after each subscription and periodically: fills the stream never delivered, and
  orders that ended at the exchange without an event.
- Every fill is reported once (by the exchange's trade id), whichever path saw it first;
  orders the venue finds over by itself (an exchange-side cancel or expiry, a fill missed)
  are handed to the engine by ``ended``.
- Keys never reach a log line or an error text: every message from ccxt is scrubbed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import ccxt
import numpy as np

from appliance.markets import Credentials, instrument_problems
from appliance.model.instruments import Instrument
from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason
from appliance.venues.base import OrderRequest, OrderStatus, QuoteBook, VenueFill
from appliance.venues.ccxt_limits import within_limits
from appliance.venues.ccxt_orders import VenueOrders
from appliance.venues.ccxt_state import CcxtVenueState
from appliance.venues.ccxt_sweep import Swept, Tracked
from appliance.venues.ccxt_trades import amount_tolerance, order_trades
from appliance.venues.ccxt_watch import TradeWatcher

log = logging.getLogger(__name__)


class VenueError(RuntimeError):
    """The venue cannot run (refused instruments, no keys) or gets no answer at all."""


class CcxtVenue:
    """``exchange`` is a synchronous ccxt instance (markets loaded on ``start``); ``symbols``
    are the instrument table, in index order; ``watcher`` None means polling."""

    def __init__(
        self,
        exchange: Any,
        instruments: Sequence[Instrument],
        state: CcxtVenueState,
        credentials: Credentials,
        *,
        watcher: TradeWatcher | None = None,
        retries: int = 3,
        retry_backoff_s: float = 0.5,
        poll_interval_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.exchange = exchange
        self.instruments = list(instruments)
        self.symbols = [i.name for i in self.instruments]
        self.state = state
        self.creds = credentials
        self.watcher = watcher
        self.retries, self.retry_backoff_s = retries, retry_backoff_s
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep
        self.quotes = QuoteBook(len(self.symbols))
        self.orders = VenueOrders(self.symbols, self._track if watcher is not None else None)
        self._pending: list[dict[str, Any]] = []  # watched trades of orders not mapped yet
        self._ready: list[VenueFill] = []  # fills fetched after a reconnect
        self._next_poll = 0.0
        self._seen_reconnects = 0
        self.sent = 0
        self.rejected_before_send = 0

    def start(self) -> None:
        """Load markets, check the instruments against them, start watching: before the
        engine reconciles and takes intents."""
        if not self.creds.secrets():
            raise VenueError("the ccxt venue needs keys: set credentials_file or credentials_env")
        self._call(self.exchange.load_markets)
        problems = instrument_problems(self.exchange, self.instruments)
        if problems:
            raise VenueError("; ".join(msg for _, msg in problems))
        try:
            self._call(self.exchange.fetch_balance)  # the keys work, before anything is sent
        except ccxt.AuthenticationError as exc:
            raise VenueError(f"{self.exchange.id} refused the keys: {self._text(exc)}") from None
        if self.watcher is not None:
            self.watcher.start()

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.state.close()

    # ---- orders -----------------------------------------------------------------------

    def submit(self, order: OrderRequest) -> OrderStatus:
        self._catch_up()
        cid = order.client_id
        checked = self._checked(order)
        if isinstance(checked, str):
            self.rejected_before_send += 1
            return OrderStatus(cid, OrderState.REJECTED, reason=RejectReason.BAD_ORDER,
                               reason_text=checked)  # fmt: skip
        amount, price = checked
        symbol = self.symbols[order.symbol]
        kind = "market" if order.order_type == OrderType.MARKET else "limit"
        side = "buy" if order.side > 0 else "sell"
        self.state.remember(cid, order.symbol)
        for attempt in range(self.retries + 1):
            try:
                answer = self.exchange.create_order(
                    symbol, kind, side, amount, price, {"clientOrderId": cid}
                )
            except ccxt.NetworkError as exc:
                self.state.attempt(cid, "send", "network", self._text(exc))
                if attempt == self.retries:
                    break
                self._sleep(self.retry_backoff_s * 2**attempt)
                found = self._lookup(cid, order.symbol)  # did it arrive after all?
                if found is not None:
                    return found
                continue
            except ccxt.BaseError as exc:
                text = self._text(exc)
                self.state.attempt(cid, "send", "refused", text)
                duplicate = "Duplicate order" in text or isinstance(exc, ccxt.DuplicateOrderId)
                return OrderStatus(cid, OrderState.REJECTED, reason=RejectReason.VENUE,
                                   reason_text=text, duplicate=duplicate)  # fmt: skip
            self.state.attempt(cid, "send", "ok")
            self.sent += 1
            return self._reported(
                self._status(cid, order.symbol, answer, answer.get("trades") or ())
            )
        raise VenueError(f"order {cid} on {symbol}: no answer after {self.retries + 1} attempts")

    def cancel(self, client_id: str) -> OrderStatus | None:
        sym = self._symbol(client_id)
        if sym is None:
            return None
        try:
            self.exchange.cancel_order(None, self.symbols[sym], {"clientOrderId": client_id})
            self.state.attempt(client_id, "cancel", "ok")
        except ccxt.OrderNotFound:
            self.state.attempt(client_id, "cancel", "refused", "not open at the exchange")
        except ccxt.NetworkError as exc:
            self.state.attempt(client_id, "cancel", "network", self._text(exc))
            raise VenueError(f"cancel of {client_id}: {self._text(exc)}") from None
        return self.fetch_order(client_id)

    def fetch_order(self, client_id: str) -> OrderStatus | None:
        sym = self._symbol(client_id)
        return None if sym is None else self._reported(self._lookup(client_id, sym))

    def open_orders(self) -> list[OrderStatus]:
        out = []
        for i, symbol in enumerate(self.symbols):
            for o in self._call(self.exchange.fetch_open_orders, symbol):
                cid = o.get("clientOrderId") or ""
                if self.state.symbol(cid) is None:
                    log.warning("open order %s on %s was not placed by this appliance", cid, symbol)
                out.append(self._status(cid, i, o, ()))
        return out

    # ---- market data and fills ----------------------------------------------------------

    def on_ticks(self, ticks: np.ndarray) -> list[VenueFill]:
        if len(ticks):
            self.quotes.update(ticks)
        self._catch_up()
        fills, self._ready = self._ready, []
        if self.watcher is not None and self.watcher.error is None:
            fills += self._watched() + self._swept()
        elif time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_interval_s
            fills += self._poll()
        return self.orders.unreported(fills)

    def ended(self) -> list[OrderStatus]:
        """Orders the venue found over by itself since the last call (their fills come
        from ``on_ticks``): cancelled or expired at the exchange, or filled unseen."""
        return self.orders.ended()

    def _watched(self) -> list[VenueFill]:
        """Fills of the trades the stream pushed, once their orders are mapped."""
        while not self.watcher.trades.empty():
            self._pending.append(self.watcher.trades.get())
        fills: list[VenueFill] = []
        pending, self._pending = self._pending, []
        for trade in pending:
            cid = self.state.client_id(str(trade.get("order")))
            if cid is None:
                self._pending.append(trade)  # its submit has not returned yet
            else:
                fills += self._fills(cid, [trade])
        self._pending = self._pending[-10_000:]
        return fills

    def _swept(self) -> list[VenueFill]:
        """What the REST safety net found: missed fills, orders found over."""
        found = self.watcher.sweep.found
        fills: list[VenueFill] = []
        while not found.empty():
            s = found.get()
            sym = self.orders.symbol(s.client_id)
            if sym is not None:  # else settled meanwhile, with all its fills
                o = s.order if s.order.get("status") == "open" else self._over(s, sym)
                fills += self.orders.found(self._status(s.client_id, sym, o, s.trades))
        return fills

    def _over(self, s: Swept, sym: int) -> dict[str, Any]:
        """An order found over, as open while its fills known fall short of its filled
        amount (its trades listed only in part): the next pass fetches them again. Over
        without all its fills, the engine would close it on a fill mismatch."""
        symbol, filled = self.symbols[sym], float(s.order.get("filled") or 0.0)
        fills = self._fills(s.client_id, s.trades)
        if self.orders.covered(s.client_id, fills, filled,
                               amount_tolerance(self.exchange, symbol, filled)):  # fmt: skip
            return s.order
        log.warning("order %s on %s is %s with %g filled, its trades found add up to less: "
                    "looked at again on the next pass", s.client_id, symbol,
                    s.order.get("status"), filled)  # fmt: skip
        return s.order | {"status": "open"}

    def _poll(self) -> list[VenueFill]:
        fills: list[VenueFill] = []
        for cid, o in list(self.orders.open.items()):
            status = self._lookup(cid, o.symbol)
            fills += self.orders.found(status) if status else []
        return fills

    def _catch_up(self) -> None:
        """After the watcher reconnected: every open order's fills, over REST."""
        if self.watcher is None or self.watcher.reconnects == self._seen_reconnects:
            return
        self._seen_reconnects = self.watcher.reconnects
        n = len(self.orders.open)
        self._ready += self._poll()
        log.info("order updates reconnected: %d open orders checked over REST", n)

    def _reported(self, status: OrderStatus) -> OrderStatus:
        """``status`` goes to the engine with all its fills: none is reported again."""
        self.orders.unreported(status.fills)
        return status

    def _track(self, orders: tuple[Tracked, ...]) -> None:
        self.watcher.sweep.orders = orders  # what the safety net checks

    # ---- helpers ----------------------------------------------------------------------

    def _checked(self, order: OrderRequest) -> tuple[float, float | None] | str:
        """(amount, price) rounded to the market's precision, or why it cannot be valid."""
        if not 0 <= order.symbol < len(self.symbols):
            return f"unknown symbol index {order.symbol}"
        symbol = self.symbols[order.symbol]
        try:
            return within_limits(
                self.exchange, symbol, order, self.quotes.take_price(order.symbol, order.side)
            )
        except (ccxt.BaseError, ValueError, TypeError) as exc:
            return f"{symbol}: {self._text(exc)}"

    def _lookup(self, cid: str, sym: int) -> OrderStatus | None:
        """The order and all its fills from the exchange; None if it never arrived."""
        symbol = self.symbols[sym]
        try:
            o = self._call(self.exchange.fetch_order, None, symbol, {"clientOrderId": cid})
        except ccxt.OrderNotFound:
            return None
        return self._status(cid, sym, o, order_trades(self.exchange, o, symbol, self._call))

    def _status(self, cid: str, sym: int, o: dict[str, Any], trades: Sequence[dict]) -> OrderStatus:
        if o.get("id"):
            self.state.set_exchange_id(cid, str(o["id"]))
        state = self.orders.note(cid, sym, o)
        fills = tuple(self._fills(cid, trades, o.get("lastTradeTimestamp") or o.get("timestamp")))
        return OrderStatus(cid, state, float(o.get("filled") or 0.0), fills)

    def _fills(
        self, cid: str, trades: Sequence[dict], default_ms: int | None = None
    ) -> list[VenueFill]:
        """Fills of ``cid`` from ccxt trades; ``default_ms``: the time of trades without one
        (an order answer's fills carry none: the order's time is theirs)."""
        out = []
        for t in trades:
            price, amount = float(t["price"]), float(t["amount"])
            fee = t.get("fee") or {}
            base, quote = self._currencies(cid)
            cost = float(fee.get("cost") or 0.0)
            fee_quote = cost * price if fee.get("currency") == base else cost
            if fee.get("currency") not in (None, base, quote):
                fee_quote = 0.0  # paid in a third asset (e.g. BNB): not in quote terms
            ts = t.get("timestamp") or default_ms
            out.append(VenueFill(str(t["id"]), cid, amount, price, fee_quote,
                                 t.get("takerOrMaker") == "maker",
                                 int(ts) * 1_000_000 if ts else time.time_ns()))  # fmt: skip
        return out

    def _currencies(self, cid: str) -> tuple[str, str]:
        sym = self._symbol(cid)
        market = self.exchange.market(self.symbols[sym or 0])
        return market["base"], market["quote"]

    def _symbol(self, cid: str) -> int | None:
        sym = self.orders.symbol(cid)
        return sym if sym is not None else self.state.symbol(cid)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A read-only request, retried on network errors (reads are always safe to repeat)."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args)
            except ccxt.NetworkError as exc:
                if attempt == self.retries:
                    raise VenueError(f"{fn.__name__}: {self._text(exc)}") from None
                self._sleep(self.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _text(self, exc: BaseException) -> str:
        return self.creds.scrub(f"{type(exc).__name__}: {exc}")[:500]

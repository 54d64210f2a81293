"""PaperVenue: a simulated exchange that keeps its own books in its own SQLite file.

It outlives an execution-process crash the way a real exchange does: orders it accepted
and fills it made are committed before ``submit``/``on_ticks`` return, independently of the
execution journal. Reconciliation after a restart is therefore real: the engine asks this
file, not its own memory, what happened to the orders it sent.

Matching model (top of book only, no queue position):
- MARKET: fills at the best ask (buy) / bid (sell) of the latest quote, up to the quoted
  size; the remainder is cancelled (IOC). No quote: rejected NO_MARKET; no size:
  rejected NO_LIQUIDITY. Taker fee.
- LIMIT: if marketable on arrival (ask <= limit for a buy, bid >= limit for a sell) it
  fills as a taker at the best price up to the quoted size, and the rest rests. A resting
  order fills completely, at its limit, with the maker fee, when a later tick reaches it:
  a trade at or through the limit, or a quote through it (ask <= buy limit, bid >= sell
  limit).
- Size taken from the quote is used up until the next tick refreshes the quote, so two
  orders in a row cannot both take the full displayed size.
- A client order id it has seen before is rejected (duplicate): the guard against a
  double send. Quotes are not persisted: after a restart the venue waits for ticks.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason
from appliance.storage.sqlite import StoreError, one_of, open_store, transaction
from appliance.venues.base import OrderRequest, OrderStatus, QuoteBook, VenueFill, price_extremes

APPLICATION_ID = 0x444D5056  # "DMPV"
SCHEMA_VERSION = 1
_LOT_EPS = 1e-9
_RESTING = (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)
# Files made before this term was built from the names index "state IN (3, 4)": the same
# rows, and SQLite uses that index for this term too (it reads the ORs as an IN).
_RESTING_SQL = one_of("state", _RESTING)

_SCHEMA = f"""
CREATE TABLE orders (
    client_id   TEXT PRIMARY KEY,
    symbol      INTEGER NOT NULL,
    side        INTEGER NOT NULL,
    order_type  INTEGER NOT NULL,
    qty         REAL NOT NULL,
    limit_price REAL NOT NULL,
    lot         REAL NOT NULL,
    filled_qty  REAL NOT NULL DEFAULT 0,
    state       INTEGER NOT NULL,
    reason      INTEGER NOT NULL DEFAULT 0,
    reason_text TEXT NOT NULL DEFAULT '',
    created_ns  INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL
);
CREATE INDEX orders_resting ON orders(state) WHERE {_RESTING_SQL};
CREATE TABLE fills (
    fill_seq      INTEGER PRIMARY KEY,
    venue_fill_id TEXT NOT NULL UNIQUE,
    client_id     TEXT NOT NULL REFERENCES orders(client_id),
    qty           REAL NOT NULL,
    price         REAL NOT NULL,
    fee           REAL NOT NULL,
    maker         INTEGER NOT NULL,
    ts_ns         INTEGER NOT NULL
);
CREATE INDEX fills_order ON fills(client_id);
"""


class PaperVenueError(StoreError):
    """The paper venue's state file is unusable."""


@dataclass(slots=True)
class _Resting:
    symbol: int
    side: int
    limit: float
    lots: int
    filled_lots: int
    lot: float


class _RestingIndex:
    """Resting orders as arrays for the vectorised tick check, kept up to date in O(1) per
    added or removed order (amortised) instead of rebuilt from the dict on every change,
    which made a run quadratic in the number of resting orders.

    Slots are append-only in arrival order; a removed order leaves a dead slot, and the
    arrays are compacted (order kept) once dead slots outnumber live ones.
    """

    def __init__(self) -> None:
        self.cids: list[str | None] = []
        self.sym = np.zeros(16, np.intp)
        self.side = np.zeros(16, np.int64)
        self.limit = np.zeros(16, float)
        self.alive = np.zeros(16, bool)
        self.slot: dict[str, int] = {}
        self.compactions = 0  # whole-index rewrites, for tests and diagnostics

    def add(self, cid: str, r: _Resting) -> None:
        i = len(self.cids)
        if i == len(self.alive):
            for name in ("sym", "side", "limit", "alive"):
                a = getattr(self, name)
                grown = np.zeros(2 * len(a), a.dtype)
                grown[:i] = a
                setattr(self, name, grown)
        self.sym[i], self.side[i], self.limit[i], self.alive[i] = r.symbol, r.side, r.limit, True
        self.cids.append(cid)
        self.slot[cid] = i

    def remove(self, cids: Sequence[str]) -> None:
        for cid in cids:
            i = self.slot.pop(cid)
            self.alive[i] = False
            self.cids[i] = None
        n = len(self.cids)
        if n > 64 and len(self.slot) < n // 2:
            self.compactions += 1
            keep = np.flatnonzero(self.alive[:n])
            self.cids = [self.cids[i] for i in keep.tolist()]
            self.slot = {cid: i for i, cid in enumerate(self.cids)}
            for name in ("sym", "side", "limit", "alive"):
                a = getattr(self, name)
                a[: len(keep)] = a[keep]
                a[len(keep) : n] = 0
        # (the arrays keep their capacity: they are sized for the peak)


class PaperVenue:
    """Simulated venue; ``lot_size`` (one for all symbols, or one per symbol) must match
    the execution engine's."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        n_symbols: int,
        *,
        lot_size: float | Sequence[float] = 1e-8,
        taker_bps: float = 10.0,
        maker_bps: float = 2.0,
        synchronous: str = "NORMAL",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        # NORMAL (no fsync per order) is enough here: it survives a crash of the process,
        # which is what reconciliation is tested against. On power loss the venue may lose
        # its last orders while the journal (FULL) kept them as NEW; recovery then sees
        # "unknown to the venue" and rejects them: consistent, since nothing was matched.
        self.path = path
        self.n_symbols = n_symbols
        self.lot = np.broadcast_to(np.asarray(lot_size, float), (n_symbols,)).copy()
        self.taker_bps = taker_bps
        self.maker_bps = maker_bps
        self.quotes = QuoteBook(n_symbols)
        self._clock = clock
        self._conn = open_store(
            path,
            what="paper venue state file",
            application_id=APPLICATION_ID,
            version=SCHEMA_VERSION,
            schema=_SCHEMA,
            synchronous=synchronous,
            error=PaperVenueError,
        )
        self._fill_seq = self._conn.execute(
            "SELECT COALESCE(MAX(fill_seq), 0) FROM fills"
        ).fetchone()[0]
        self._resting: dict[str, _Resting] = {}
        for cid, sym, side, limit, qty, filled, lot in self._conn.execute(
            "SELECT client_id, symbol, side, limit_price, qty, filled_qty, lot FROM orders "
            f"WHERE {_RESTING_SQL} ORDER BY rowid"
        ):
            self._resting[cid] = _Resting(
                sym, side, limit, round(qty / lot), round(filled / lot), lot
            )
        self._book = _RestingIndex()
        for cid, r in self._resting.items():
            self._book.add(cid, r)

    def close(self) -> None:
        self._conn.close()

    # ---- orders -------------------------------------------------------------------------

    def submit(self, order: OrderRequest) -> OrderStatus:
        cid = order.client_id
        now = self._clock()
        sym, side, limit = order.symbol, order.side, order.limit_price
        reason, text, lots, lot = self._validate(order)
        state = OrderState.REJECTED
        fill_lots, price = 0, math.nan
        if not reason:
            price = self.quotes.take_price(sym, side)
            avail = math.floor(self.quotes.take_size(sym, side) / lot + _LOT_EPS)
            if order.order_type == OrderType.MARKET:
                if not math.isfinite(price):
                    reason, text = RejectReason.NO_MARKET, "no quote for the symbol"
                elif avail <= 0:
                    reason, text = RejectReason.NO_LIQUIDITY, "no quoted size"
                else:
                    fill_lots = min(lots, avail)
                    state = OrderState.FILLED
                    if fill_lots < lots:  # IOC: what the quote could not fill is cancelled
                        state, text = OrderState.CANCELED, "IOC remainder beyond quoted size"
                        reason = RejectReason.NO_LIQUIDITY
            else:
                crosses = math.isfinite(price) and (price <= limit if side > 0 else price >= limit)
                fill_lots = min(lots, max(avail, 0)) if crosses else 0
                state = (
                    OrderState.FILLED
                    if fill_lots == lots
                    else OrderState.PARTIALLY_FILLED
                    if fill_lots
                    else OrderState.ACCEPTED
                )
        fills: tuple[VenueFill, ...] = ()
        if fill_lots:
            fills = (self._make_fill(cid, fill_lots * lot, price, self.taker_bps, False, now),)
        try:
            with transaction(self._conn) as c:
                c.execute(
                    "INSERT INTO orders (client_id, symbol, side, order_type, qty, limit_price, "
                    "lot, filled_qty, state, reason, reason_text, created_ns, updated_ns) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        cid, sym, side, order.order_type,
                        lots * lot if lots else _finite(order.qty), _finite(limit), lot,
                        fill_lots * lot, int(state), int(reason), text, now, now,
                    ),
                )  # fmt: skip
                self._insert_fills(c, fills)
        except sqlite3.IntegrityError:  # the primary key: this id was seen before
            return OrderStatus(
                cid,
                OrderState.REJECTED,
                reason=RejectReason.VENUE,
                reason_text="duplicate client order id",
                duplicate=True,
            )
        if fill_lots:  # the displayed size is used up until the next tick refreshes it
            book = self.quotes.ask_size if side > 0 else self.quotes.bid_size
            book[sym] = max(book[sym] - fill_lots * lot, 0.0)
        if state in _RESTING:
            r = self._resting[cid] = _Resting(sym, side, limit, lots, fill_lots, lot)
            self._book.add(cid, r)
        return OrderStatus(cid, state, fill_lots * lot, fills, RejectReason(reason), text)

    def _validate(self, order: OrderRequest) -> tuple[int, str, int, float]:
        """(reason, text, lots, lot); reason 0 when the order is well formed."""
        if not 0 <= order.symbol < self.n_symbols:
            return RejectReason.UNKNOWN_SYMBOL, f"unknown symbol {order.symbol}", 0, 1.0
        lot = float(self.lot[order.symbol])
        lots = math.floor(order.qty / lot + _LOT_EPS) if math.isfinite(order.qty) else 0
        if lots < 1:
            return RejectReason.BAD_ORDER, f"qty {order.qty} is below one lot ({lot})", 0, lot
        if order.side not in (1, -1):
            return RejectReason.BAD_ORDER, f"bad side {order.side}", lots, lot
        if order.order_type == OrderType.LIMIT:
            if not (math.isfinite(order.limit_price) and order.limit_price > 0):
                return RejectReason.BAD_ORDER, f"bad limit price {order.limit_price}", lots, lot
        elif order.order_type != OrderType.MARKET:
            return RejectReason.BAD_ORDER, f"bad order type {order.order_type}", lots, lot
        return 0, "", lots, lot

    def cancel(self, client_id: str) -> OrderStatus | None:
        r = self._resting.pop(client_id, None)
        if r is not None:
            self._book.remove([client_id])
            with transaction(self._conn) as c:
                c.execute(
                    "UPDATE orders SET state = ?, updated_ns = ? WHERE client_id = ?",
                    (int(OrderState.CANCELED), self._clock(), client_id),
                )
        return self.fetch_order(client_id)

    def fetch_order(self, client_id: str) -> OrderStatus | None:
        row = self._conn.execute(
            "SELECT state, filled_qty, reason, reason_text FROM orders WHERE client_id = ?",
            (client_id,),
        ).fetchone()
        if row is None:
            return None
        fills = tuple(
            VenueFill(fid, client_id, q, p, fee, bool(m), ts)
            for fid, q, p, fee, m, ts in self._conn.execute(
                "SELECT venue_fill_id, qty, price, fee, maker, ts_ns FROM fills "
                "WHERE client_id = ? ORDER BY fill_seq",
                (client_id,),
            )
        )
        return OrderStatus(
            client_id, OrderState(row[0]), row[1], fills, RejectReason(row[2]), row[3]
        )

    def open_orders(self) -> list[OrderStatus]:
        return [s for cid in list(self._resting) if (s := self.fetch_order(cid)) is not None]

    def ended(self) -> list[OrderStatus]:
        return []  # resting orders end only by a fill or a cancel asked for

    # ---- market data --------------------------------------------------------------------

    def on_ticks(self, ticks: np.ndarray) -> list[VenueFill]:
        """Update the quotes and fill every resting order that the batch reached."""
        if len(ticks) == 0:
            return []
        self.quotes.update(ticks)
        if not self._resting:
            return []
        low, high = price_extremes(ticks, self.n_symbols)
        book, n = self._book, len(self._book.cids)
        sym, side, limit = book.sym[:n], book.side[:n], book.limit[:n]
        hit = book.alive[:n] & np.where(side > 0, low[sym] <= limit, high[sym] >= limit)
        if not hit.any():
            return []
        now = self._clock()
        fills = []
        hit_cids = [book.cids[i] for i in np.flatnonzero(hit).tolist()]
        for cid in hit_cids:
            r = self._resting.pop(cid)
            qty = (r.lots - r.filled_lots) * r.lot
            fills.append(self._make_fill(cid, qty, r.limit, self.maker_bps, True, now))
        book.remove(hit_cids)
        with transaction(self._conn) as c:
            self._insert_fills(c, fills)
            c.executemany(
                "UPDATE orders SET state = ?, filled_qty = qty, updated_ns = ? WHERE client_id = ?",
                [(int(OrderState.FILLED), now, f.client_id) for f in fills],
            )
        return fills

    # ---- fills --------------------------------------------------------------------------

    def _make_fill(
        self, cid: str, qty: float, price: float, bps: float, maker: bool, now: int
    ) -> VenueFill:
        self._fill_seq += 1
        fee = qty * price * bps / 1e4
        return VenueFill(f"P{self._fill_seq}", cid, qty, price, fee, maker, now)

    def _insert_fills(self, c, fills: Sequence[VenueFill]) -> None:
        c.executemany(
            "INSERT INTO fills (fill_seq, venue_fill_id, client_id, qty, price, fee, maker, "
            "ts_ns) VALUES (?,?,?,?,?,?,?,?)",
            [
                (int(f.venue_fill_id[1:]), f.venue_fill_id, f.client_id, f.qty, f.price,
                 f.fee, int(f.maker), f.ts_ns)
                for f in fills
            ],
        )  # fmt: skip


def _finite(x: float) -> float:
    """SQLite stores NaN as NULL; keep rejected garbage storable."""
    return float(x) if math.isfinite(x) else 0.0

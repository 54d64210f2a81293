"""What the execution process reads back from its own journal: what a (re)start reloads
(open orders, fills, positions) and what recognising re-delivered input asks (is this
intent seq, this venue fill already journaled).

These reads share the writer's connection (``Journal.reads``), so they see every batch the
journal committed, and come back as model objects. The reports' read-only view of the file
(rows as dicts, a connection of its own) is ``journal_read.JournalReader``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from appliance.model.orders import OPEN, Allocation, Fill, IntentOrder, OrderState, VenueOrder
from appliance.storage.sqlite import one_of

# Open orders, as the journal's partial indexes name them: a query must repeat the term
# for SQLite to use them.
OPEN_STATES = one_of("state", OPEN)
_CHUNK = 500  # bound on "IN (...)" parameter lists

_ORDER_COLS = (
    "client_order_id, host, population, agent, intent_seq, symbol, side, order_type, qty, "
    "limit_price, lot, state, filled_qty, avg_price, reason, reason_text, created_ns"
)
_VENUE_COLS = (
    "client_order_id, venue_seq, symbol, side, order_type, qty, limit_price, lot, state, "
    "filled_qty, avg_price, reason, reason_text, created_ns"
)


class OpenPosition(NamedTuple):
    """Lots one agent holds in one symbol at one lot size (non-zero)."""

    host: int
    population: int
    agent: int
    symbol: int
    lot: float
    lots: int  # signed


def _lots(qty: float, lot: float) -> int:
    return round(qty / lot)


class RecoveryReads:
    """Queries of one journal connection (the journal's own: see ``Journal.reads``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def journaled_seqs(self, epoch: str | None, host: int, seqs: Iterable[int]) -> set[int]:
        """The subset of ``seqs`` already journaled for ``host`` in ``epoch``."""
        wanted = sorted({int(s) for s in seqs})
        if not wanted:
            return set()
        rows = self._conn.execute(
            "SELECT intent_seq FROM orders WHERE epoch = ? AND host = ? "
            "AND intent_seq BETWEEN ? AND ?",
            (epoch, host, wanted[0], wanted[-1]),
        )
        return {r[0] for r in rows}.intersection(wanted)

    def max_intent_seqs(self, epoch: str | None) -> dict[int, int]:
        """Per host, the highest intent seq journaled in ``epoch``."""
        rows = self._conn.execute(
            "SELECT host, MAX(intent_seq) FROM orders WHERE epoch = ? GROUP BY host",
            (epoch,),
        )
        return {h: s for h, s in rows}

    def highest_intent_seqs(self) -> dict[int, int]:
        """Per host, the highest intent seq journaled in any run or epoch (for intents whose
        seq outlives runs: a cluster gateway's stream positions)."""
        rows = self._conn.execute("SELECT host, MAX(intent_seq) FROM orders GROUP BY host")
        return {h: s for h, s in rows}

    def known_venue_fill_ids(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """The subset of (venue_order_id, venue_fill_id) already journaled. A fill id alone
        is not a key: some venues number fills per order (or restart their numbering)."""
        wanted = set(keys)
        orders = sorted({vo for vo, _ in wanted})
        known: set[tuple[str, str]] = set()
        for i in range(0, len(orders), _CHUNK):
            part = orders[i : i + _CHUNK]
            rows = self._conn.execute(
                "SELECT venue_order_id, venue_fill_id FROM venue_fills WHERE venue_order_id IN "
                f"({','.join('?' * len(part))})",
                part,
            )
            known.update(k for k in rows if k in wanted)
        return known

    def open_orders(self) -> list[IntentOrder]:
        """Intent orders in a non-terminal state, in journal order."""
        rows = self._conn.execute(
            f"SELECT {_ORDER_COLS} FROM orders WHERE {OPEN_STATES} ORDER BY rowid"
        )
        out = []
        for r in rows:
            lot, filled, avg = r[10], r[12], r[13]
            state = OrderState(r[11])
            out.append(
                IntentOrder(
                    client_order_id=r[0], state=state, persisted=state, host=r[1],
                    population=r[2], agent=r[3], intent_seq=r[4], symbol=r[5], side=r[6],
                    order_type=r[7], qty_lots=_lots(r[8], lot), lot=lot, limit_price=r[9],
                    filled_lots=_lots(filled, lot), notional=(avg or 0.0) * filled,
                    reason=r[14], reason_text=r[15], created_ns=r[16],
                )
            )  # fmt: skip
        return out

    def _venue_orders(self, where: str, args: tuple = ()) -> list[VenueOrder]:
        rows = self._conn.execute(
            f"SELECT {_VENUE_COLS} FROM venue_orders WHERE {where} ORDER BY venue_seq", args
        ).fetchall()
        out = []
        for r in rows:
            lot, filled, avg = r[7], r[9], r[10]
            state = OrderState(r[8])
            allocs = [
                Allocation(cid, _lots(q, lot), _lots(f, lot))
                for cid, q, f in self._conn.execute(
                    "SELECT client_order_id, qty, filled_qty FROM venue_order_intents "
                    "WHERE venue_order_id = ? ORDER BY pos",
                    (r[0],),
                )
            ]
            out.append(
                VenueOrder(
                    client_order_id=r[0], state=state, persisted=state, venue_seq=r[1],
                    symbol=r[2], side=r[3], order_type=r[4], qty_lots=_lots(r[5], lot), lot=lot,
                    limit_price=r[6], filled_lots=_lots(filled, lot),
                    notional=(avg or 0.0) * filled, reason=r[11], reason_text=r[12],
                    created_ns=r[13], allocations=allocs,
                )
            )  # fmt: skip
        return out

    def open_venue_orders(self) -> list[VenueOrder]:
        """Venue orders in a non-terminal state, oldest first, with their allocations."""
        return self._venue_orders(OPEN_STATES)

    def venue_order(self, client_order_id: str) -> VenueOrder | None:
        found = self._venue_orders("client_order_id = ?", (client_order_id,))
        return found[0] if found else None

    def fills(self, after: int = 0) -> list[Fill]:
        """Intent fills in the order they were applied (fill_id order); ``after``: only
        those with a larger fill id."""
        rows = self._conn.execute(
            "SELECT f.client_order_id, o.host, o.population, o.agent, o.symbol, f.side, f.qty, "
            "o.lot, f.price, f.fee, f.liquidity, f.ts_ns, f.venue_order_id, f.venue_fill_id "
            "FROM fills f JOIN orders o USING (client_order_id) WHERE f.fill_id > ? "
            "ORDER BY f.fill_id",
            (after,),
        )
        return [
            Fill(r[0], r[1], r[2], r[3], r[4], r[5], _lots(r[6], r[7]), r[7], r[8], r[9], r[10],
                 r[11], r[12], r[13])
            for r in rows
        ]  # fmt: skip

    def open_positions(self, after: int = 0) -> list[OpenPosition]:
        """Every non-zero holding per (host, population, agent, symbol, lot), summed in
        integer lots (exact, whatever order the fills are added in); ``after``: of the
        fills with a larger fill id only."""
        rows = self._conn.execute(
            "SELECT o.host, o.population, o.agent, o.symbol, o.lot, "
            "SUM(f.side * CAST(ROUND(f.qty / o.lot) AS INTEGER)) AS held "
            "FROM fills f JOIN orders o USING (client_order_id) WHERE f.fill_id > ? "
            "GROUP BY o.host, o.population, o.agent, o.symbol, o.lot HAVING held != 0",
            (after,),
        )
        return [OpenPosition(*r) for r in rows]

    def positions_from_fills(self) -> dict[tuple[int, int, int, int], float]:
        """Signed position per (host, population, agent, symbol), base units; flat keys are
        left out."""
        out: dict[tuple[int, int, int, int], float] = {}
        for p in self.open_positions():
            key = (p.host, p.population, p.agent, p.symbol)
            out[key] = out.get(key, 0.0) + p.lots * p.lot
        return out

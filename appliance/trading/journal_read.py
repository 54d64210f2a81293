"""Read-only queries of the journal for people and reports: orders, fills, the layout.

Opens the file read-only (SQLite ``mode=ro``), so it can be used while the execution process
writes it (WAL readers never block the writer). Rows come back as plain dicts with the
journal's integer codes; naming them is the caller's business.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.trading.archive import CARRY_PREFIX
from appliance.trading.journal import JournalError, connect_readonly
from appliance.trading.recovery_reads import RecoveryReads

ORDER_COLUMNS = (
    "n", "client_order_id", "run_id", "host", "population", "agent", "intent_seq", "symbol",
    "side", "order_type", "qty", "limit_price", "state", "filled_qty", "avg_price", "reason",
    "reason_text", "created_ns", "updated_ns",
)  # fmt: skip
FILL_COLUMNS = (
    "fill_id", "client_order_id", "host", "population", "agent", "symbol", "side", "qty",
    "price", "fee", "liquidity", "ts_ns", "venue_order_id", "venue_fill_id",
)  # fmt: skip

# A venue fill's liquidity is the venue's word: maker (it rested) or taker.
_FILL_SELECT = {
    **{c: f"o.{c}" for c in ("host", "population", "agent", "symbol")},
    "liquidity": "CASE WHEN f.liquidity = 'venue' THEN "
    "CASE WHEN v.maker THEN 'maker' ELSE 'taker' END ELSE f.liquidity END",
}


@dataclass(frozen=True)
class Filters:
    """What to select; None: no condition. ``agent`` is (host, population, agent) with
    trailing Nones allowed (a whole host, or a whole population)."""

    since_ns: int | None = None
    until_ns: int | None = None
    host: int | None = None
    population: int | None = None
    agent: int | None = None
    symbols: tuple[int, ...] | None = None
    states: tuple[int, ...] | None = None
    run_id: int | None = None

    def where(self, time_col: str, prefix: str = "") -> tuple[str, list[Any]]:
        conds, args = [], []
        for col, value in (
            (time_col, self.since_ns), (f"{prefix}host", self.host),
            (f"{prefix}population", self.population), (f"{prefix}agent", self.agent),
            (f"{prefix}run_id", self.run_id),
        ):  # fmt: skip
            if value is not None:
                conds.append(f"{col} >= ?" if col == time_col else f"{col} = ?")
                args.append(value)
        if self.until_ns is not None:
            conds.append(f"{time_col} < ?")
            args.append(self.until_ns)
        for col, values in ((f"{prefix}symbol", self.symbols), (f"{prefix}state", self.states)):
            if values is not None:
                conds.append(f"{col} IN ({','.join('?' * len(values))})")
                args.extend(values)
        return (" WHERE " + " AND ".join(conds)) if conds else "", args


class JournalReader:
    """A read-only view of a journal file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._conn = connect_readonly(self.path)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def layout(self) -> dict[str, Any]:
        """The latest recorded layout: {symbols, lots, agents: [[host, population, n]]}."""
        row = self._conn.execute(
            "SELECT layout FROM runs WHERE layout IS NOT NULL ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: no run recorded its layout yet")
        return json.loads(row[0])

    def marks(self) -> tuple[int, int]:
        """(highest order rowid, highest fill id): where the journal stands now."""
        return self._conn.execute(
            "SELECT (SELECT COALESCE(MAX(rowid), 0) FROM orders), "
            "(SELECT COALESCE(MAX(fill_id), 0) FROM fills)"
        ).fetchone()

    def max_intent_seqs(self, epoch: str) -> dict[int, int]:
        """Per host, the highest intent seq journaled in queue lifetime ``epoch``."""
        return RecoveryReads(self._conn).max_intent_seqs(epoch)

    def identity(self) -> int:
        """The start time of the journal's first run: which journal this is."""
        row = self._conn.execute("SELECT started_ns FROM runs ORDER BY run_id LIMIT 1").fetchone()
        return int(row[0]) if row else 0

    def orders(
        self, f: Filters = Filters(), limit: int | None = None, after: int = 0
    ) -> Iterator[dict]:
        """Intent orders in journal order (the newest ``limit`` when given; only those
        after order rowid ``after``)."""
        where, args = f.where("created_ns")
        if after:
            where, args = (where + " AND" if where else " WHERE") + " rowid > ?", [*args, after]
        cols = ", ".join(ORDER_COLUMNS).replace("n,", "rowid AS n,", 1)
        sql = f"SELECT {cols} FROM orders{where} ORDER BY rowid"
        yield from self._rows(sql, args, ORDER_COLUMNS, limit, "n")

    def fills(
        self, f: Filters = Filters(), limit: int | None = None, after: int = 0
    ) -> Iterator[dict]:
        """Fills of intent orders in the order they were applied (fill_id order; only
        those after fill id ``after``)."""
        where, args = f.where("f.ts_ns", prefix="o.")
        if after:
            where = (where + " AND" if where else " WHERE") + " f.fill_id > ?"
            args = [*args, after]
        cols = ", ".join(_FILL_SELECT.get(c, f"f.{c}") for c in FILL_COLUMNS)
        sql = (
            f"SELECT {cols} FROM fills f JOIN orders o USING (client_order_id) "
            "LEFT JOIN venue_fills v USING (venue_order_id, venue_fill_id)"
            f"{where} ORDER BY f.fill_id"
        )
        yield from self._rows(sql, args, FILL_COLUMNS, limit, "fill_id")

    def last_prices(self, f: Filters = Filters()) -> dict[int, float]:
        """symbol -> price of its last fill (carries aside: they are average prices, not
        trades), in the time window of ``f`` only: the marks of ``dynamind pnl``, the same
        whichever agents or symbols it shows (docs/metrics.md, "Offline")."""
        window = Filters(since_ns=f.since_ns, until_ns=f.until_ns)
        where, args = window.where("f.ts_ns")
        where = (where + " AND" if where else " WHERE") + " f.client_order_id NOT LIKE ?"
        sql = (
            "SELECT o.symbol, f.price FROM fills f JOIN orders o USING (client_order_id) "
            f"WHERE f.fill_id IN (SELECT MAX(f.fill_id) FROM fills f JOIN orders o "
            f"USING (client_order_id){where} GROUP BY o.symbol)"
        )
        rows = self._conn.execute(sql, [*args, CARRY_PREFIX + "%"])
        return {int(sym): float(price) for sym, price in rows}

    def _rows(
        self, sql: str, args: list, cols: tuple[str, ...], limit: int | None, order: str
    ) -> Iterator[dict]:
        if limit:
            # The newest `limit`, still oldest first.
            newest = sql.replace("ORDER BY", "ORDER BY -1 *", 1)
            sql = f"SELECT * FROM ({newest} LIMIT {int(limit)}) ORDER BY {order}"
        for row in self._conn.execute(sql, args):
            yield dict(zip(cols, row, strict=True))

"""What the ccxt venue must remember across restarts, in its own SQLite file.

An exchange finds an order by client id only together with its symbol, and reports fills by
its own order id: this file maps client id -> (symbol, exchange order id), written before an
order is sent, and keeps every send attempt (time, outcome, error) so a restart or an
operator can see what happened to an order whose sending failed or was retried.
"""

from __future__ import annotations

import os
import time

from appliance.storage.sqlite import StoreError, open_store, transaction

APPLICATION_ID = 0x444D4358  # "DMCX"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE orders (
    client_id   TEXT PRIMARY KEY,
    symbol      INTEGER NOT NULL,
    exchange_id TEXT,                 -- the exchange's order id, once it answered
    created_ns  INTEGER NOT NULL
);
CREATE INDEX orders_exchange_id ON orders(exchange_id);
CREATE TABLE attempts (               -- every request that sends or cancels an order
    client_id TEXT NOT NULL,
    attempt   INTEGER NOT NULL,       -- 1, 2, ... per client id and action
    action    TEXT NOT NULL,          -- 'send' or 'cancel'
    ts_ns     INTEGER NOT NULL,
    outcome   TEXT NOT NULL,          -- 'ok', 'network' (retried or in doubt), 'refused'
    detail    TEXT NOT NULL DEFAULT '' -- the error, with any credential scrubbed out
);
CREATE INDEX attempts_order ON attempts(client_id);
"""


class VenueStateError(StoreError):
    """The ccxt venue's state file is unusable."""


class CcxtVenueState:
    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        self._conn = open_store(
            path,
            what="ccxt venue state file",
            application_id=APPLICATION_ID,
            version=SCHEMA_VERSION,
            schema=_SCHEMA,
            synchronous=synchronous,
            error=VenueStateError,
        )

    def close(self) -> None:
        self._conn.close()

    def remember(self, client_id: str, symbol: int) -> None:
        with transaction(self._conn) as c:
            c.execute(
                "INSERT OR IGNORE INTO orders (client_id, symbol, created_ns) VALUES (?,?,?)",
                (client_id, symbol, time.time_ns()),
            )

    def set_exchange_id(self, client_id: str, exchange_id: str) -> None:
        with transaction(self._conn) as c:
            c.execute(
                "UPDATE orders SET exchange_id = ? WHERE client_id = ?", (exchange_id, client_id)
            )

    def symbol(self, client_id: str) -> int | None:
        row = self._conn.execute(
            "SELECT symbol FROM orders WHERE client_id = ?", (client_id,)
        ).fetchone()
        return None if row is None else row[0]

    def client_id(self, exchange_id: str) -> str | None:
        row = self._conn.execute(
            "SELECT client_id FROM orders WHERE exchange_id = ?", (exchange_id,)
        ).fetchone()
        return None if row is None else row[0]

    def attempt(self, client_id: str, action: str, outcome: str, detail: str = "") -> int:
        """Record one request; its number among this order's requests of ``action``."""
        with transaction(self._conn) as c:
            (n,) = c.execute(
                "SELECT COUNT(*) FROM attempts WHERE client_id = ? AND action = ?",
                (client_id, action),
            ).fetchone()
            c.execute(
                "INSERT INTO attempts (client_id, attempt, action, ts_ns, outcome, detail) "
                "VALUES (?,?,?,?,?,?)",
                (client_id, n + 1, action, time.time_ns(), outcome, detail),
            )
        return n + 1

    def attempts(self, client_id: str) -> list[tuple[int, str, str, str]]:
        """(attempt, action, outcome, detail) of ``client_id``, in order."""
        return self._conn.execute(
            "SELECT attempt, action, outcome, detail FROM attempts WHERE client_id = ? "
            "ORDER BY rowid",
            (client_id,),
        ).fetchall()

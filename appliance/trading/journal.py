"""The execution journal: every intent, venue order and fill, in SQLite (WAL).

The journal commit is the durability boundary of the appliance. An intent is journaled (as
NEW, or REJECTED with its reason) before anything is sent for it; a venue order is
journaled before it is sent; acks and fills are journaled in one transaction per batch.
After a crash the journal plus the venue's own records are the whole truth: open orders
are reloaded from here and reconciled with the venue by client order id.

Writes are batch-shaped (``write`` takes everything a batch produced and commits once);
state changes are replayed through ``orders.transition`` before any row is touched, and a
row is only updated if it still holds the state the caller last saw.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import NamedTuple

from appliance.model.orders import Fill, IntentOrder, OrderState, VenueOrder, walk
from appliance.storage.sqlite import StoreError, open_store, transaction
from appliance.trading.recovery_reads import OPEN_STATES, RecoveryReads
from appliance.venues.base import VenueFill

APPLICATION_ID = 0x444D4A4E  # "DMJN": marks the file as a dynamind journal
# 2: runs.layout, venue fills keyed per venue order; 3: open-order indexes name the states;
# 4: trading_states; 5: the positions checkpoint
SCHEMA_VERSION = 5

# Venue fill ids are only unique per venue order at some venues (the paper venue's restart
# at P1 when its state file is recreated): a venue fill is keyed by (venue order, fill id).
_VENUE_FILLS = """
CREATE TABLE {name} (             -- fills as the venue reported them; the idempotence key
    venue_order_id TEXT NOT NULL REFERENCES venue_orders(client_order_id),
    venue_fill_id  TEXT NOT NULL,
    qty            REAL NOT NULL,
    price          REAL NOT NULL,
    fee            REAL NOT NULL,
    maker          INTEGER NOT NULL,
    ts_ns          INTEGER NOT NULL,
    PRIMARY KEY (venue_order_id, venue_fill_id)
);
"""
_FILLS = """
CREATE TABLE {name} (             -- fills of intent orders (internal, or a venue fill's share)
    fill_id         INTEGER PRIMARY KEY AUTOINCREMENT,     -- application order
    client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
    venue_order_id  TEXT REFERENCES venue_orders(client_order_id),
    venue_fill_id   TEXT,
    side            INTEGER NOT NULL,
    qty             REAL NOT NULL,
    price           REAL NOT NULL,
    fee             REAL NOT NULL,
    liquidity       TEXT NOT NULL CHECK (liquidity IN ('internal', 'venue')),
    ts_ns           INTEGER NOT NULL,
    FOREIGN KEY (venue_order_id, venue_fill_id)
        REFERENCES venue_fills(venue_order_id, venue_fill_id),
    UNIQUE (venue_order_id, venue_fill_id, client_order_id)  -- applied to an intent once
);
"""
_FILL_TABLES = _VENUE_FILLS.format(name="venue_fills") + _FILLS.format(name="fills")

_SCHEMA = """
CREATE TABLE runs (
    run_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    epoch      TEXT NOT NULL,     -- scope in which (host, intent_seq) identifies an intent
    started_ns INTEGER NOT NULL,
    stopped_ns INTEGER,           -- NULL: still running, or did not stop cleanly
    drained    TEXT,              -- JSON {host: intent queue head} at clean stop
    layout     TEXT               -- JSON {symbols, lots, agents} the run was started with
);
CREATE TABLE orders (             -- one row per intent
    client_order_id TEXT PRIMARY KEY,                      -- "{run_id}-{host}-{intent_seq}"
    run_id      INTEGER NOT NULL REFERENCES runs(run_id),
    epoch       TEXT NOT NULL,
    host        INTEGER NOT NULL,
    population  INTEGER NOT NULL,
    agent       INTEGER NOT NULL,
    intent_seq  INTEGER NOT NULL,
    symbol      INTEGER NOT NULL,
    side        INTEGER NOT NULL,                          -- +1 buy, -1 sell
    order_type  INTEGER NOT NULL,                          -- records.OrderType
    qty         REAL NOT NULL,                             -- base units, on the lot grid
    limit_price REAL NOT NULL,
    lot         REAL NOT NULL,
    state       INTEGER NOT NULL,                          -- orders.OrderState
    filled_qty  REAL NOT NULL DEFAULT 0,
    avg_price   REAL,
    reason      INTEGER NOT NULL DEFAULT 0,                -- records.RejectReason
    reason_text TEXT NOT NULL DEFAULT '',
    created_ns  INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL,
    UNIQUE (epoch, host, intent_seq)                       -- an intent is journaled once
);
CREATE TABLE venue_orders (       -- what was actually sent to the venue
    client_order_id TEXT PRIMARY KEY,                      -- "{run_id}-v{venue_seq}"
    venue_seq   INTEGER NOT NULL UNIQUE,
    run_id      INTEGER NOT NULL REFERENCES runs(run_id),
    symbol      INTEGER NOT NULL,
    side        INTEGER NOT NULL,
    order_type  INTEGER NOT NULL,
    qty         REAL NOT NULL,
    limit_price REAL NOT NULL,
    lot         REAL NOT NULL,
    state       INTEGER NOT NULL,
    filled_qty  REAL NOT NULL DEFAULT 0,
    avg_price   REAL,
    reason      INTEGER NOT NULL DEFAULT 0,
    reason_text TEXT NOT NULL DEFAULT '',
    created_ns  INTEGER NOT NULL,
    updated_ns  INTEGER NOT NULL
);
CREATE TABLE venue_order_intents (  -- the intents a venue order covers, with their shares
    venue_order_id  TEXT NOT NULL REFERENCES venue_orders(client_order_id),
    client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
    pos             INTEGER NOT NULL,                      -- allocation order (tie-breaks)
    qty             REAL NOT NULL,                         -- allocated share of the order
    filled_qty      REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (venue_order_id, client_order_id)
) WITHOUT ROWID;
CREATE INDEX venue_order_intents_intent ON venue_order_intents(client_order_id);
"""
_OPEN_INDEXES = f"""
CREATE INDEX orders_open ON orders(state) WHERE {OPEN_STATES};
CREATE INDEX venue_orders_open ON venue_orders(state) WHERE {OPEN_STATES};
"""
# The portfolio as of one fill (checkpoint.py): a start loads it and replays only the
# fills after it, so start-up time does not grow with the journal's age.
_CHECKPOINT = """
CREATE TABLE positions (          -- per agent and symbol, as of positions_mark.fill_id
    host        INTEGER NOT NULL,
    population  INTEGER NOT NULL,
    agent       INTEGER NOT NULL,
    symbol      INTEGER NOT NULL,
    lot         REAL NOT NULL,
    lots        INTEGER NOT NULL,                          -- signed
    avg_price   REAL NOT NULL,
    realized    REAL NOT NULL,
    fees        REAL NOT NULL,
    PRIMARY KEY (host, population, agent, symbol)
) WITHOUT ROWID;
CREATE TABLE positions_mark (     -- which fills the positions table includes (one row)
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    fill_id     INTEGER NOT NULL,                          -- every fill up to it, none after
    fills       INTEGER NOT NULL,                          -- how many fills that is
    written_ns  INTEGER NOT NULL
);
"""
_TRADING_STATES = """
CREATE TABLE trading_states (     -- every change of the trading state, with who and why
    change_id  INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     INTEGER NOT NULL REFERENCES runs(run_id),
    ts_ns      INTEGER NOT NULL,
    state      TEXT NOT NULL,     -- model.enums.TradingState value
    previous   TEXT NOT NULL,
    who        TEXT NOT NULL,     -- 'operator alice (uid 1000)', 'config', 'drawdown kill switch'
    why        TEXT NOT NULL
);
"""
_SCHEMA += _FILL_TABLES + "CREATE INDEX fills_order ON fills(client_order_id);\n" + _OPEN_INDEXES
_SCHEMA += _TRADING_STATES + _CHECKPOINT

# Version 1 -> 2: runs.layout; venue fills keyed by (venue order, fill id). SQLite cannot
# change a primary key in place: rebuild both fill tables (copy, drop, rename).
_UPGRADES = {
    1: "ALTER TABLE runs ADD COLUMN layout TEXT;"
    + _VENUE_FILLS.format(name="venue_fills_v2")
    + _FILLS.format(name="fills_v2")
    + """
INSERT INTO venue_fills_v2 (venue_order_id, venue_fill_id, qty, price, fee, maker, ts_ns)
    SELECT venue_order_id, venue_fill_id, qty, price, fee, maker, ts_ns FROM venue_fills;
INSERT INTO fills_v2 SELECT fill_id, client_order_id, venue_order_id, venue_fill_id, side, qty,
    price, fee, liquidity, ts_ns FROM fills;
DROP TABLE fills;
DROP TABLE venue_fills;
ALTER TABLE venue_fills_v2 RENAME TO venue_fills;
ALTER TABLE fills_v2 RENAME TO fills;
CREATE INDEX fills_order ON fills(client_order_id);
""",
    # Version 2 -> 3: the open-order indexes said "state < 5"; they now list the states.
    2: "DROP INDEX orders_open; DROP INDEX venue_orders_open;" + _OPEN_INDEXES,
    3: _TRADING_STATES,
    # Version 4 -> 5: the positions checkpoint (empty: the next start replays every fill).
    4: _CHECKPOINT,
}


class JournalError(StoreError):
    """The journal file is unusable, or a write would contradict what it holds."""


class JournalMissing(JournalError):
    """No journal file where one was looked for."""


class TradingStateChange(NamedTuple):
    run_id: int
    ts_ns: int
    state: str
    previous: str
    who: str
    why: str


class Journal:
    """One SQLite journal file: its runs, client ids and batch writes; ``reads`` queries
    it back (recovery_reads.py). Single writer (the execution process); readers may attach
    with ``readonly=True`` while it runs."""

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: str = "FULL", readonly: bool = False
    ) -> None:
        # synchronous=FULL: a commit is fsynced before it returns. The pre-send commit is
        # what makes "journal, then send" safe; with NORMAL a power loss can drop the last
        # commits of the WAL after the order already went out, leaving a live order at the
        # venue that the journal never heard of. One fsync per batch (not per row) is the
        # price. NORMAL is still safe against a process crash (the WAL is in the page
        # cache), so tests and benchmarks may choose it.
        self.path = Path(path)
        self.run_id: int | None = None
        self.epoch: str | None = None
        self._venue_seq = 0
        self._conn = open_store(
            self.path,
            what="dynamind journal",
            application_id=APPLICATION_ID,
            version=SCHEMA_VERSION,
            schema=_SCHEMA,
            synchronous=synchronous,
            readonly=readonly,
            error=JournalError,
            upgrades=_UPGRADES,
        )
        # A read-only open may find an older file (not upgraded yet): what it lacks.
        self.schema_version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        self.reads = RecoveryReads(self._conn)

    def close(self) -> None:
        self._conn.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for the journal's companions (checkpoint.py); writers go
        through ``storage.sqlite.transaction``."""
        return self._conn

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._conn)

    # ---- runs ---------------------------------------------------------------------------

    def begin_run(
        self,
        epoch: str | int | None = None,
        now_ns: int | None = None,
        *,
        symbols: Sequence[str] | None = None,
        lots: Sequence[float] | None = None,
        agents: Mapping[tuple[int, int], int] | None = None,
    ) -> int:
        """Start a run. ``epoch`` names the lifetime of the intent queues: intents are
        identified by (epoch, host, intent_seq), so a run that continues the queues of a
        crashed run (same epoch) sees that run's intents as already journaled. Without an
        epoch every run is its own scope (queues recreated, seqs start again).

        ``symbols``/``lots`` (index order) and ``agents`` (count per (host, population)) are
        the layout the journal's indices mean in this run (see ``last_layout``)."""
        now = time.time_ns() if now_ns is None else now_ns
        layout = None
        if symbols is not None:
            layout = json.dumps(
                {
                    "symbols": list(symbols),
                    "lots": [float(x) for x in lots] if lots is not None else None,
                    "agents": None
                    if agents is None
                    else [[int(h), int(p), int(n)] for (h, p), n in sorted(agents.items())],
                }
            )
        with self._tx() as c:
            run_id = c.execute(
                "INSERT INTO runs (epoch, started_ns, layout) VALUES ('', ?, ?)", (now, layout)
            ).lastrowid
            ep = f"run-{run_id}" if epoch is None else str(epoch)
            c.execute("UPDATE runs SET epoch = ? WHERE run_id = ?", (ep, run_id))
        self.run_id, self.epoch = run_id, ep
        self._venue_seq = c.execute(
            "SELECT COALESCE(MAX(venue_seq), 0) FROM venue_orders"
        ).fetchone()[0]
        return run_id

    def record_drained(
        self, host_seqs: Mapping[int, int], now_ns: int | None = None, *, clean: bool = True
    ) -> None:
        """Clean stop: remember, per host, the intent queue's head when this run drained it
        (the count of records ever pushed, i.e. one past the last seq; not the last seq).
        ``clean`` False: the heads up to which a crashed run's intents are now journaled
        (its stale ones included); the run keeps no stop time."""
        run_id = self._need_run()
        now = time.time_ns() if now_ns is None else now_ns
        drained = json.dumps({str(h): int(s) for h, s in sorted(host_seqs.items())})
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET stopped_ns = ?, drained = ? WHERE run_id = ?",
                (now if clean else None, drained, run_id),
            )

    def adopt_epoch(self, epoch: str, now_ns: int | None = None) -> int:
        """Write into the latest run of ``epoch`` from now on (a crashed run whose queues
        outlived it), beginning a run of that epoch if the journal has none; its run id."""
        row = self._conn.execute(
            "SELECT run_id FROM runs WHERE epoch = ? ORDER BY run_id DESC LIMIT 1", (epoch,)
        ).fetchone()
        if row is None:
            self.begin_run(epoch, now_ns)
        else:
            self.run_id, self.epoch = row[0], epoch
        return self._need_run()

    def last_layout(self) -> dict | None:
        """The layout recorded by the latest run that recorded one (None: no run did)."""
        if self.schema_version < 2:  # read-only view of a file not upgraded yet
            return None
        row = self._conn.execute(
            "SELECT layout FROM runs WHERE layout IS NOT NULL ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        return json.loads(row[0]) if row else None

    def _need_run(self) -> int:
        if self.run_id is None:
            raise JournalError(f"{self.path}: no run begun (call begin_run first)")
        return self.run_id

    # ---- trading state ------------------------------------------------------------------

    def record_trading_state(
        self, state: str, previous: str, who: str, why: str, now_ns: int | None = None
    ) -> None:
        """Journal a change of the trading state (committed before it returns)."""
        run_id = self._need_run()
        now = time.time_ns() if now_ns is None else now_ns
        with self._tx() as c:
            c.execute(
                "INSERT INTO trading_states (run_id, ts_ns, state, previous, who, why) "
                "VALUES (?,?,?,?,?,?)",
                (run_id, now, state, previous, who, why),
            )

    def trading_states(self, epoch: str | None = None) -> list[TradingStateChange]:
        """Changes of the trading state in journal order: all, or those of runs of
        ``epoch``."""
        if self.schema_version < 4:  # read-only view of a file not upgraded yet
            return []
        where, args = ("WHERE r.epoch = ?", (epoch,)) if epoch is not None else ("", ())
        rows = self._conn.execute(
            "SELECT t.run_id, t.ts_ns, t.state, t.previous, t.who, t.why FROM trading_states t "
            f"JOIN runs r USING (run_id) {where} ORDER BY t.change_id",
            args,
        )
        return [TradingStateChange(*r) for r in rows]

    # ---- ids ----------------------------------------------------------------------------

    def intent_client_id(self, host: int, intent_seq: int) -> str:
        return f"{self._need_run()}-{host}-{intent_seq}"

    @staticmethod
    def intent_run(client_order_id: str) -> int:
        """The run that journaled an intent, from its client id (see intent_client_id)."""
        return int(client_order_id.split("-", 1)[0])

    def next_venue_order_id(self) -> tuple[int, str]:
        """(venue_seq, client id) for the next venue order; the seq continues across runs."""
        run_id = self._need_run()
        self._venue_seq += 1
        return self._venue_seq, f"{run_id}-v{self._venue_seq}"

    # ---- the batch write ----------------------------------------------------------------

    def write(
        self,
        *,
        new_intents: Sequence[IntentOrder] = (),
        intent_updates: Sequence[IntentOrder] = (),
        new_venue_orders: Sequence[VenueOrder] = (),
        venue_updates: Sequence[VenueOrder] = (),
        venue_fills: Sequence[VenueFill] = (),
        fills: Sequence[Fill] = (),
        now_ns: int | None = None,
    ) -> None:
        """Journal everything one batch produced, in one transaction.

        New orders are inserted in the state their recorded steps reach from NEW; updated
        orders replay their steps from the state the journal holds. Any illegal step, or a
        row that no longer holds the expected state, aborts the whole batch untouched.
        """
        run_id = self._need_run()
        now = time.time_ns() if now_ns is None else now_ns
        for o in (*new_intents, *new_venue_orders):
            if o.persisted is not None:
                raise JournalError(f"order {o.client_order_id} is already journaled")
            if walk(OrderState.NEW, o.steps, o.client_order_id) != o.state:
                raise JournalError(f"order {o.client_order_id}: steps do not reach its state")
        for o in (*intent_updates, *venue_updates):
            if o.persisted is None:
                raise JournalError(f"order {o.client_order_id} was never journaled")
            if walk(o.persisted, o.steps, o.client_order_id) != o.state:
                raise JournalError(f"order {o.client_order_id}: steps do not reach its state")
        with self._tx() as c:
            _insert_orders(c, run_id, self.epoch, now, new_intents, new_venue_orders)
            _insert_fills(c, venue_fills, fills)
            _update(c, "orders", intent_updates, now)
            _update(c, "venue_orders", venue_updates, now)
            _many(c,
                "UPDATE venue_order_intents SET filled_qty = ? "
                "WHERE venue_order_id = ? AND client_order_id = ?",
                [
                    (a.filled_lots * v.lot, v.client_order_id, a.client_order_id)
                    for v in venue_updates
                    for a in v.allocations
                ],
            )
        for o in (*new_intents, *intent_updates, *new_venue_orders, *venue_updates):
            o.mark_persisted()


def _insert_fills(
    c: sqlite3.Connection, venue_fills: Sequence[VenueFill], fills: Sequence[Fill]
) -> None:
    _many(c,
        "INSERT INTO venue_fills (venue_fill_id, venue_order_id, qty, price, fee, "
        "maker, ts_ns) VALUES (?,?,?,?,?,?,?)",
        [
            (f.venue_fill_id, f.client_id, f.qty, f.price, f.fee, int(f.maker), f.ts_ns)
            for f in venue_fills
        ],
    )
    _many(c,
        "INSERT INTO fills (client_order_id, venue_order_id, venue_fill_id, side, qty, "
        "price, fee, liquidity, ts_ns) VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (f.client_order_id, f.venue_order_id, f.venue_fill_id, f.side, f.qty,
             f.price, f.fee, f.liquidity, f.ts_ns)
            for f in fills
        ],
    )  # fmt: skip


def _insert_orders(
    c: sqlite3.Connection,
    run_id: int,
    epoch: str | None,
    now: int,
    intents: Sequence[IntentOrder],
    venue_orders: Sequence[VenueOrder],
) -> None:
    _many(c,
        "INSERT INTO orders (client_order_id, run_id, epoch, host, population, agent, "
        "intent_seq, symbol, side, order_type, qty, limit_price, lot, state, "
        "filled_qty, avg_price, reason, reason_text, created_ns, updated_ns) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                o.client_order_id, run_id, epoch, o.host, o.population, o.agent,
                o.intent_seq, o.symbol, o.side, o.order_type, o.qty, o.limit_price,
                o.lot, int(o.state), o.filled_qty, o.avg_price if o.filled_lots else None,
                int(o.reason), o.reason_text, o.created_ns, now,
            )
            for o in intents
        ],
    )  # fmt: skip
    _many(c,
        "INSERT INTO venue_orders (client_order_id, venue_seq, run_id, symbol, side, "
        "order_type, qty, limit_price, lot, state, filled_qty, avg_price, reason, "
        "reason_text, created_ns, updated_ns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            (
                v.client_order_id, v.venue_seq, run_id, v.symbol, v.side, v.order_type,
                v.qty, v.limit_price, v.lot, int(v.state), v.filled_qty,
                v.avg_price if v.filled_lots else None, int(v.reason), v.reason_text,
                v.created_ns, now,
            )
            for v in venue_orders
        ],
    )  # fmt: skip
    _many(c,
        "INSERT INTO venue_order_intents (venue_order_id, client_order_id, pos, qty, "
        "filled_qty) VALUES (?,?,?,?,?)",
        [
            (v.client_order_id, a.client_order_id, i, a.lots * v.lot,
             a.filled_lots * v.lot)
            for v in venue_orders
            for i, a in enumerate(v.allocations)
        ],
    )  # fmt: skip


def _update(
    c: sqlite3.Connection, table: str, orders: Sequence[IntentOrder | VenueOrder], now: int
) -> None:
    if not orders:
        return
    cur = c.executemany(
        f"UPDATE {table} SET state = ?, filled_qty = ?, avg_price = ?, reason = ?, "
        "reason_text = ?, updated_ns = ? WHERE client_order_id = ? AND state = ?",
        [
            (int(o.state), o.filled_qty, o.avg_price if o.filled_lots else None,
             int(o.reason), o.reason_text, now, o.client_order_id, int(o.persisted))
            for o in orders
        ],
    )  # fmt: skip
    if cur.rowcount != len(orders):
        raise JournalError(
            f"{table}: {len(orders) - cur.rowcount} of {len(orders)} updates found the row "
            "missing or in another state than expected; batch not written"
        )


def connect_readonly(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only SQLite connection to the journal at ``path``, checked like any open (for
    tools that query it while the execution process writes it)."""
    if not Path(path).exists():
        raise JournalMissing(f"{path}: no journal here")
    return Journal(path, readonly=True)._conn


def _many(c: sqlite3.Connection, sql: str, rows: Sequence[tuple] | list[tuple]) -> None:
    """``executemany``, skipped for no rows (a batch of one intent touches few tables, and
    each empty call still costs a statement lookup)."""
    if rows:
        c.executemany(sql, rows)

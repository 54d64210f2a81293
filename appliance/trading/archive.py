"""Moving closed runs out of the journal, keeping every open position exact.

The journal grows with every intent and fill, and a start replays every fill to rebuild
positions, so start-up time grows with the journal's age. ``archive_runs`` moves the
orders, venue orders and fills of runs that ended before a time into an archive file
(itself a journal, readable with the same tools) and leaves in their place, per agent and
symbol still holding a position, one *carry* fill: the position at the cut, at its
average price. Positions (in lots) and average prices are what they were; realised PnL
and fees of the archived fills move with them to the archive.

What may move, and what must stay:

- only terminal orders of closed runs (a run is closed once it stopped cleanly or a later
  run began); an order still open, and everything after it, stays;
- per (agent, symbol) a prefix of its fills, in fill order: the carry fill stands for that
  prefix, so nothing after the first fill that stays may move;
- a venue order moves with all the intents it covers, or none of them stays behind alone.

Carry rows are orders in the epoch ``archive`` (client id ``carry-<fill id>``) with one
internal fill at the average price and no fee; the next archive replays them like any
other fill. Run rows stay in the journal (they are small, and ids keep counting on).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from appliance.model.orders import TERMINAL, OrderState
from appliance.model.records import OrderType, RejectReason
from appliance.storage.sqlite import one_of
from appliance.trading.journal import Journal, JournalError
from appliance.trading.portfolio import Position

CARRY_EPOCH = "archive"
CARRY_PREFIX = "carry-"
_TERMINAL_SQL = one_of("state", TERMINAL)


def is_carry(client_order_id: str) -> bool:
    """Whether a journal order (or its fill) is a carry row, not a trade."""
    return client_order_id.startswith(CARRY_PREFIX)


_TABLES = (
    "runs", "orders", "venue_orders", "venue_order_intents", "venue_fills", "fills",
    "trading_states",
)  # fmt: skip


@dataclass(frozen=True)
class ArchiveSummary:
    runs: list[int]
    orders: int
    venue_orders: int
    fills: int
    carried: int  # positions represented by a carry fill
    archive: Path

    def __str__(self) -> str:
        if not self.runs:
            return "nothing to archive: no run closed before that time"
        return (
            f"archived runs {self.runs[0]}..{self.runs[-1]} to {self.archive}: "
            f"{self.orders:,} orders, {self.venue_orders:,} venue orders, {self.fills:,} fills; "
            f"{self.carried:,} open positions carried over"
        )


def closed_runs_before(conn: sqlite3.Connection, before_ns: int) -> list[int]:
    """Run ids, oldest first, of the leading runs that ended before ``before_ns``."""
    rows = conn.execute("SELECT run_id, started_ns, stopped_ns FROM runs ORDER BY run_id")
    runs = rows.fetchall()
    out = []
    for i, (run_id, _, stopped) in enumerate(runs):
        ended = stopped if stopped is not None else (runs[i + 1][1] if i + 1 < len(runs) else None)
        if ended is None or ended >= before_ns:
            break
        out.append(run_id)
    return out


class _Selection:
    """Which orders may move, computed to a fixed point of the three rules."""

    def __init__(self, conn: sqlite3.Connection, last_run: int) -> None:
        self.movable = {
            cid
            for (cid,) in conn.execute(
                f"SELECT client_order_id FROM orders WHERE run_id <= ? AND {_TERMINAL_SQL}",
                (last_run,),
            )
        }
        self.venue: dict[str, list[str]] = defaultdict(list)  # venue order -> intents
        self.venue_ok: dict[str, bool] = {}
        for vid, cid, run, state in conn.execute(
            "SELECT v.venue_order_id, v.client_order_id, o.run_id, o.state "
            "FROM venue_order_intents v JOIN venue_orders o ON o.client_order_id = "
            "v.venue_order_id"
        ):
            self.venue[vid].append(cid)
            self.venue_ok[vid] = run <= last_run and state in TERMINAL
        # Every fill, by key in fill order (the carry rule looks at what comes after).
        self.fills: dict[tuple, list[tuple]] = defaultdict(list)
        for row in conn.execute(
            "SELECT f.fill_id, f.client_order_id, o.host, o.population, o.agent, o.symbol, "
            "f.side, f.qty, o.lot, f.price, f.fee, f.ts_ns "
            "FROM fills f JOIN orders o USING (client_order_id) ORDER BY f.fill_id"
        ):
            self.fills[row[2:6]].append(row)
        while self._venue_rule() | self._prefix_rule():
            pass
        # A key whose moving fills are only its carry has nothing new to fold in: leave it
        # (moving it would write the same carry back, and make archiving twice do work).
        for rows in self.fills.values():
            moving = [r for r in rows if r[1] in self.movable]
            if moving and all(is_carry(r[1]) for r in moving):
                self.movable.difference_update(r[1] for r in moving)

    def _venue_rule(self) -> bool:
        changed = False
        for vid, cids in self.venue.items():
            if any(c in self.movable for c in cids) and (
                not self.venue_ok[vid] or not all(c in self.movable for c in cids)
            ):
                self.movable.difference_update(cids)
                changed = True
        return changed

    def _prefix_rule(self) -> bool:
        changed = False
        for rows in self.fills.values():
            staying = False
            for row in rows:
                if row[1] not in self.movable:
                    staying = True
                elif staying:
                    self.movable.discard(row[1])
                    changed = True
        return changed

    def moving_fills(self) -> dict[tuple, list[tuple]]:
        return {
            key: moving
            for key, rows in self.fills.items()
            if (moving := [r for r in rows if r[1] in self.movable])
        }

    def moving_venue_orders(self) -> list[str]:
        return [v for v, cids in self.venue.items() if all(c in self.movable for c in cids)]


class ArchiveError(JournalError):
    """The archive file holds runs of another journal (one started over since)."""


def _runs(conn: sqlite3.Connection, schema: str = "main") -> dict[int, int]:
    return dict(conn.execute(f"SELECT run_id, started_ns FROM {schema}.runs"))


def _others(archive: dict[int, int], journal: dict[int, int]) -> list[int]:
    """Runs of ``archive`` that are not ``journal``'s: a journal keeps its run rows when
    its runs are archived, so an archive of it holds only runs it still lists."""
    return sorted(r for r, started in archive.items() if journal.get(r) != started)


def archive_file(journal: Path, first: Path) -> Path:
    """``first``, or the first of ``first``-2, -3, ... that is new or an archive of
    ``journal``: after `dynamind reset --journal` run ids start again at 1, and the rows of
    two journals in one file would collide and be impossible to tell apart."""
    j = Journal(journal)  # checked as archive_runs checks it; not read-only (see below)
    try:
        ours = _runs(j.connection)
    finally:
        j.close()
    candidates = (first.with_name(f"{first.stem}-{n}{first.suffix}") for n in itertools.count(2))
    for path in itertools.chain([first], candidates):
        if not path.exists() or _archive_of(path, ours):
            return path
    raise AssertionError("an endless sequence ended")


def _archive_of(path: Path, ours: dict[int, int]) -> bool:
    try:
        # Not mode=ro: a read-only connection leaves the WAL's -wal and -shm files behind.
        conn = sqlite3.connect(path)
        try:
            return not _others(_runs(conn), ours)
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return False  # not an archive of ours, whatever it is: leave it alone


def archive_runs(journal: Path, before_ns: int, to: Path) -> ArchiveSummary:
    """Move runs closed before ``before_ns`` from ``journal`` into ``to`` (see module doc);
    ``to`` is created only when there is something to move, and refused (ArchiveError)
    when it holds runs of another journal.

    The appliance must be stopped. One transaction: either everything moves or nothing.
    """
    Journal(journal).close()  # identity and schema checks, upgrade if older
    conn = sqlite3.connect(journal, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        runs = closed_runs_before(conn, before_ns)
        if not runs:
            return ArchiveSummary([], 0, 0, 0, 0, to)
        to.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        Journal(to).close()  # the archive is a journal of the same schema (created if new)
        conn.execute("ATTACH DATABASE ? AS arc", (str(to),))
        if others := _others(_runs(conn, "arc"), _runs(conn)):
            raise ArchiveError(
                f"{to} holds runs of another journal (runs {others[0]}..{others[-1]} started "
                f"at other times than {journal}'s): archive to another file"
            )
        sel = _Selection(conn, runs[-1])
        fills = sel.moving_fills()
        venue = sel.moving_venue_orders()
        carries = _carries(fills, runs[-1])
        conn.execute("BEGIN IMMEDIATE")
        try:
            _move(conn, runs, sel.movable, venue, [r[0] for rows in fills.values() for r in rows])
            _insert_carries(conn, carries)
            # Realised PnL and fees moved out with the fills: the next start replays the
            # fills that stayed (carries included) instead of a checkpoint that has them.
            conn.execute("DELETE FROM main.positions_mark")
            conn.execute("DELETE FROM main.positions")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("DETACH DATABASE arc")
        conn.execute("VACUUM")  # give the space back: the point of archiving
        n_fills = sum(len(rows) for rows in fills.values())
        return ArchiveSummary(runs, len(sel.movable), len(venue), n_fills, len(carries), to)
    finally:
        conn.close()


def _carries(fills: dict[tuple, list[tuple]], run_id: int) -> list[tuple]:
    """One (order row, fill row) per key whose moving fills leave a position open."""
    now = time.time_ns()
    out = []
    for (host, pop, agent, sym), rows in fills.items():
        lot = rows[0][8]
        pos = Position(lot)
        for r in rows:
            pos.apply(r[6], round(r[7] / r[8]), r[9], r[10])
        if pos.lots == 0:
            continue
        fill_id, ts = rows[-1][0], rows[-1][11]  # the carry takes the last moved fill's place
        cid = f"{CARRY_PREFIX}{fill_id}"
        side = 1 if pos.lots > 0 else -1
        qty = abs(pos.lots) * lot
        order = (cid, run_id, CARRY_EPOCH, host, pop, agent, fill_id, sym, side,
                 int(OrderType.MARKET), qty, 0.0, lot, int(OrderState.FILLED), qty, pos.avg_price,
                 int(RejectReason.NONE),
                 "position carried over from archived runs", ts, now)  # fmt: skip
        out.append((order, (fill_id, cid, side, qty, pos.avg_price, ts)))
    return out


def _move(
    conn: sqlite3.Connection, runs: list[int], orders: set[str], venue: list[str], fills: list
) -> None:
    for name, rows in (("m_orders", orders), ("m_venue", venue), ("m_fills", fills)):
        conn.execute(f"CREATE TEMP TABLE {name} (k PRIMARY KEY) WITHOUT ROWID")
        conn.executemany(f"INSERT INTO {name} VALUES (?)", ((k,) for k in rows))
    cols = _columns(conn)
    conn.execute(
        f"INSERT OR IGNORE INTO arc.runs ({cols['runs']}) SELECT {cols['runs']} FROM main.runs "
        "WHERE run_id <= ?",
        (runs[-1],),
    )
    copy = {
        "orders": "client_order_id IN (SELECT k FROM m_orders)",
        "venue_orders": "client_order_id IN (SELECT k FROM m_venue)",
        "venue_order_intents": "venue_order_id IN (SELECT k FROM m_venue)",
        "venue_fills": "venue_order_id IN (SELECT k FROM m_venue)",
        "fills": "fill_id IN (SELECT k FROM m_fills)",
        "trading_states": f"run_id <= {int(runs[-1])}",
    }
    for table, where in copy.items():
        c = cols[table]
        conn.execute(f"INSERT INTO arc.{table} ({c}) SELECT {c} FROM main.{table} WHERE {where}")
    for table in (
        "fills", "venue_order_intents", "venue_fills", "venue_orders", "orders", "trading_states"
    ):  # fmt: skip
        conn.execute(f"DELETE FROM main.{table} WHERE {copy[table]}")
    for name in ("m_orders", "m_venue", "m_fills"):
        conn.execute(f"DROP TABLE temp.{name}")


def _columns(conn: sqlite3.Connection) -> dict[str, str]:
    """Column lists by name: an upgraded journal may order its columns differently."""
    return {
        t: ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_info({t})")) for t in _TABLES
    }


def _insert_carries(conn: sqlite3.Connection, carries: list[tuple]) -> None:
    conn.executemany(
        "INSERT INTO orders (client_order_id, run_id, epoch, host, population, agent, "
        "intent_seq, symbol, side, order_type, qty, limit_price, lot, state, filled_qty, "
        "avg_price, reason, reason_text, created_ns, updated_ns) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [order for order, _ in carries],
    )
    conn.executemany(
        "INSERT INTO fills (fill_id, client_order_id, side, qty, price, fee, liquidity, ts_ns) "
        "VALUES (?,?,?,?,?,0,'internal',?)",
        [fill for _, fill in carries],
    )

"""The positions checkpoint: a start replays only the fills after it, not every fill ever.

The journal's fills are the truth of every position, but replaying all of them makes a
start slower the older the journal is. So the engine writes, in the journal itself, each
agent's position state per symbol (lots, average price, realised PnL, fees) as of one
fill, the *mark*: at every clean stop and whenever enough fills have passed since the last
checkpoint. A start loads the checkpoint and applies the fills after the mark.

Exact, not approximate: the portfolio applies fills in fill-id order (after each commit,
batch.py), and a Position's floats survive SQLite's REAL unchanged, so the checkpoint plus
the later fills gives bit for bit the portfolio a replay of every fill gives (tested).
Between two engine calls the engine's portfolio holds every fill in the journal (one
writer), so the highest fill id is the mark of what it holds. Only the keys a fill moved
since the last checkpoint are written. Archiving rewrites fills (carry fills) and drops
the checkpoint; a mark the journal's fills do not reach is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from appliance.storage.sqlite import transaction
from appliance.trading.journal import Journal
from appliance.trading.portfolio import Key, Portfolio, Position
from appliance.trading.recovery_reads import OpenPosition

log = logging.getLogger(__name__)

EVERY_FILLS = 10_000  # a checkpoint at least this often: what a start after a crash replays
SCHEMA = 5  # the journal version that has the checkpoint tables
_COLS = "host, population, agent, symbol, lot, lots, avg_price, realized, fees"


@dataclass(frozen=True)
class Mark:
    fill_id: int  # every fill up to this id is in the checkpoint, none after
    fills: int  # how many fills that is


def load(journal: Journal) -> tuple[Mark, dict[Key, Position]]:
    """The checkpoint (Mark(0, 0) and nothing: none, or one the journal's fills do not
    reach, which is then ignored with a warning)."""
    none: tuple[Mark, dict[Key, Position]] = (Mark(0, 0), {})
    if journal.schema_version < SCHEMA:  # a read-only view of a file not upgraded yet
        return none
    conn = journal.connection
    row = conn.execute("SELECT fill_id, fills FROM positions_mark").fetchone()
    if row is None:
        return none
    mark = Mark(*row)
    (top,) = conn.execute("SELECT COALESCE(MAX(fill_id), 0) FROM fills").fetchone()
    if mark.fill_id > top:
        log.warning(
            "positions checkpoint at fill %d is beyond the journal's: ignored", mark.fill_id
        )
        return none
    positions = {
        (h, p, a, s): Position(lot, lots, avg, realized, fees)
        for h, p, a, s, lot, lots, avg, realized, fees in conn.execute(
            f"SELECT {_COLS} FROM positions"
        )
    }
    return mark, positions


class PositionsCheckpoint:
    """Restores a portfolio from the journal and writes its checkpoints."""

    def __init__(
        self,
        journal: Journal,
        portfolio: Portfolio,
        every: int = EVERY_FILLS,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.journal = journal
        self.portfolio = portfolio
        self.every = every
        self._clock = clock  # the engine's: a backtest's journal is the data's, row for row
        self.saved = 0  # the portfolio's fill count at the last checkpoint
        self._rewrite = True  # no usable checkpoint loaded: the next one replaces the table

    def restore(self) -> int:
        """Load the (empty) portfolio: the checkpoint, then the fills after it; returns how
        many fills were replayed."""
        mark, positions = load(self.journal)
        self.portfolio.load(positions, mark.fills)
        after = self.journal.reads.fills(after=mark.fill_id)
        self.portfolio.apply_all(after)
        self.saved = mark.fills
        self._rewrite = mark.fill_id == 0
        log.info(
            "positions: checkpoint at fill %d (%d fills) and %d fills after it",
            mark.fill_id,
            mark.fills,
            len(after),
        )
        return len(after)

    def due(self) -> bool:
        return self.portfolio.fill_count - self.saved >= self.every

    def save(self) -> None:
        """Write the keys changed since the last checkpoint and move the mark, in one
        transaction (call between engine calls: the portfolio then holds every fill). After
        a start without a usable checkpoint every key was replayed, hence touched: rows left
        from an ignored one are deleted first."""
        p = self.portfolio
        rows = [
            (*key, pos.lot, pos.lots, pos.avg_price, pos.realized, pos.fees)
            for key in p.touched
            if (pos := p.held(key)) is not None
        ]
        with transaction(self.journal.connection) as c:
            (top,) = c.execute("SELECT COALESCE(MAX(fill_id), 0) FROM fills").fetchone()
            if self._rewrite:
                c.execute("DELETE FROM positions")
            c.executemany(
                f"INSERT OR REPLACE INTO positions ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", rows
            )
            c.execute(
                "INSERT OR REPLACE INTO positions_mark (id, fill_id, fills, written_ns) "
                "VALUES (0, ?, ?, ?)",
                (top, p.fill_count, self._clock()),
            )
        p.touched.clear()
        self.saved = p.fill_count
        self._rewrite = False


def open_positions(journal: Journal) -> list[OpenPosition]:
    """``Journal.open_positions`` from the checkpoint and the fills after it (the same
    holdings per agent, symbol and lot, without summing every fill ever)."""
    mark, positions = load(journal)
    held: dict[tuple[int, int, int, int, float], int] = {
        (*key, pos.lot): pos.lots for key, pos in positions.items() if pos.lots
    }
    for p in journal.reads.open_positions(after=mark.fill_id):
        k = (p.host, p.population, p.agent, p.symbol, p.lot)
        held[k] = held.get(k, 0) + p.lots
    return [OpenPosition(*k, lots) for k, lots in sorted(held.items()) if lots]

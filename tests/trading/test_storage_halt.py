"""A full disk under the journal and the paper venue: no intent taken, halted, resumed.

The files live on a small tmpfs of the test's own. The test fills it while intents keep
arriving, checks that execution stopped taking them (the caller keeps them queued) and
says why, frees the space, and checks that every intent is then journaled exactly once
and the positions equal the fills.
"""

from __future__ import annotations

import errno
import sqlite3

import numpy as np
import pytest

from appliance.model.enums import TradingState
from appliance.model.records import Side
from appliance.model.universe import Universe
from appliance.storage.sqlite import storage_failure
from appliance.trading.engine import ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.storage_halt import StorageHalt
from appliance.venues.paper import PaperVenue
from tests.trading.conftest import LIMITS, SYMS


def _take(guard: StorageHalt, intents: np.ndarray) -> bool:
    """Process ``intents``; True when the engine journaled them (the queue may let go)."""
    return guard.call(ExecutionEngine.process, intents) is not None


@pytest.mark.parametrize("full", ["journal and venue", "venue"])
def test_a_full_disk_halts_keeps_intents_queued_and_resumes(
    tmp_path, small_fs, intents, quotes, check_invariants, full
):
    journal_dir = small_fs.path if "journal" in full else tmp_path

    def make() -> ExecutionEngine:
        journal = Journal(journal_dir / "journal.sqlite", synchronous="NORMAL")
        venue = PaperVenue(small_fs.path / "venue.sqlite", len(SYMS), lot_size=0.001)
        return ExecutionEngine(Universe.of(SYMS, 0.001), LIMITS, journal, venue)

    files = [journal_dir / "journal.sqlite", small_fs.path / "venue.sqlite"]
    guard = StorageHalt(make, "queues-1", files, retry_s=0.0)
    assert guard.start() is not None
    rng = np.random.default_rng(0)
    tick = quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=1e6)
    published, consumed = 0, 0  # a queue: taken only once journaled

    def publish(n: int) -> np.ndarray:
        nonlocal published
        rows = [
            {"seq": published + i, "agent": int(rng.integers(8)), "symbol": int(rng.integers(2)),
             "side": int(rng.choice([Side.BUY, Side.SELL])), "qty": 0.001 * int(rng.integers(1, 9))}
            for i in range(n)
        ]  # fmt: skip
        published += n
        return intents(rows)

    queue = [publish(20)]
    guard.call(ExecutionEngine.on_ticks, tick)
    assert _take(guard, queue.pop())
    consumed = published

    small_fs.fill()
    for _ in range(400):  # SQLite reuses its WAL's pages for a while: trade until it needs more
        queue.append(publish(20))
        batch = np.concatenate(queue)
        if not _take(guard, batch):
            break
        queue.clear()
        consumed = published
    else:
        raise AssertionError("the full disk never refused a write")
    assert guard.engine is None and "full" in guard.reason
    status = guard.status()
    assert status.trading == TradingState.HALTED.value and status.trading_why == guard.reason
    assert not status.takes_intents
    # nothing more is taken while the disk stays full; the intents stay with the caller
    queue.append(publish(20))
    assert not _take(guard, np.concatenate(queue))
    assert guard.retry() is None and guard.engine is None
    assert published - consumed == sum(len(q) for q in queue) > 0

    small_fs.free()
    summary = guard.retry()
    assert summary is not None and guard.engine is not None and guard.reason == ""
    guard.call(ExecutionEngine.on_ticks, tick)
    assert _take(guard, np.concatenate(queue))  # those a failed batch journaled: recognised
    check_invariants(guard.engine, {0: published})  # each exactly once; positions = fills
    guard.close()


def test_storage_failure_names_full_and_failing_disks_only(tmp_path):
    assert storage_failure(OSError(errno.ENOSPC, "No space left on device", "/x")) is not None
    assert storage_failure(OSError(errno.ENOENT, "No such file", "/x")) is None
    conn = sqlite3.connect(tmp_path / "a.sqlite")
    try:
        conn.execute("SELECT * FROM nowhere")
    except sqlite3.Error as exc:
        assert storage_failure(exc) is None
    conn.close()

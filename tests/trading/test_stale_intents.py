"""Journaling the intents a crashed appliance left queued (trading/stale_intents.py)."""

from __future__ import annotations

import json

import numpy as np

from appliance.model.orders import OrderState
from appliance.model.records import RejectReason
from appliance.trading.journal import Journal
from appliance.trading.stale_intents import journal_stale

LOTS = [0.001, 0.001, 0.001]


def _rows(journal: Journal) -> list[tuple]:
    return journal._conn.execute(
        "SELECT epoch, host, intent_seq, state, reason, qty, filled_qty FROM orders "
        "ORDER BY epoch, host, intent_seq"
    ).fetchall()


def test_only_what_the_journal_lacks_is_journaled_stale_and_never_executed(make_engine, intents):
    engine = make_engine("E1")
    engine.process(intents([{"seq": s, "qty": 0.01} for s in range(5)]))  # 0..4 journaled
    journal = engine.journal
    # The queue still holds 3..9: 3 and 4 were journaled but not released before the crash.
    left = intents([{"seq": s, "qty": 0.01} for s in range(3, 10)])
    s = journal_stale(journal, "E1", {0: left}, {0: 10}, LOTS, 123)
    assert (s.queued, s.journaled, s.already, s.heads) == (7, 5, 2, {0: 10})
    assert s.run_id == engine.journal.run_id
    rows = _rows(journal)
    assert [r[2] for r in rows] == list(range(10))
    stale = [r for r in rows if r[4] == RejectReason.STALE_AFTER_CRASH]
    assert [r[2] for r in stale] == [5, 6, 7, 8, 9]
    assert all(r[3] == OrderState.REJECTED and r[5] == 0.01 and r[6] == 0 for r in stale)
    assert not journal._conn.execute(
        "SELECT count(*) FROM fills f JOIN orders o USING (client_order_id) WHERE o.reason = ?",
        (RejectReason.STALE_AFTER_CRASH,),
    ).fetchone()[0]
    drained, stopped = journal._conn.execute(
        "SELECT drained, stopped_ns FROM runs WHERE epoch = 'E1'"
    ).fetchone()
    assert json.loads(drained) == {"0": 10} and stopped is None  # a crash is no clean stop
    again = journal_stale(journal, "E1", {0: left}, {0: 10}, LOTS, 124)
    assert again.journaled == 0 and _rows(journal) == rows
    engine.close()


def test_an_epoch_the_journal_never_saw_gets_a_run_and_garbage_is_kept_storable(tmp_path, intents):
    journal = Journal(tmp_path / "j.sqlite", synchronous="NORMAL")
    bad = intents([{"seq": 0, "qty": float("nan"), "symbol": 99}, {"seq": 1, "side": 0}])
    bad["limit_price"][1] = np.inf
    s = journal_stale(journal, "E9", {1: bad}, {1: 2}, LOTS, 5)
    assert s.journaled == 2
    assert [r[:5] for r in _rows(journal)] == [
        ("E9", 1, 0, OrderState.REJECTED, RejectReason.STALE_AFTER_CRASH),
        ("E9", 1, 1, OrderState.REJECTED, RejectReason.STALE_AFTER_CRASH),
    ]
    assert journal._conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    journal.close()

import sqlite3

import pytest

from appliance.journal import Journal, JournalError
from appliance.orders import (
    Allocation,
    Fill,
    IllegalTransition,
    IntentOrder,
    OrderState,
    VenueOrder,
)
from appliance.venues.base import VenueFill

S = OrderState


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "j.sqlite", synchronous="NORMAL")
    j.begin_run(now_ns=1)
    yield j
    j.close()


def intent(j: Journal, seq: int, host: int = 0, agent: int = 0, lots: int = 10, side: int = 1):
    return IntentOrder(
        j.intent_client_id(host, seq), host=host, agent=agent, intent_seq=seq, symbol=0,
        side=side, order_type=1, qty_lots=lots, lot=0.1, created_ns=1,
    )  # fmt: skip


def fill(o: IntentOrder, lots: int, price: float = 100.0, **kw) -> Fill:
    return Fill(
        o.client_order_id, o.host, o.population, o.agent, o.symbol, o.side, lots, o.lot, price,
        0.0, kw.pop("liquidity", "internal"), 1, **kw,
    )  # fmt: skip


def test_wal_and_schema(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    assert j._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = {r[0] for r in j._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "orders", "venue_orders", "venue_order_intents", "fills"} <= tables


def test_runs_and_ids_unique_across_restarts(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path, synchronous="NORMAL")
    assert j.begin_run() == 1
    first = {j.intent_client_id(0, 5), j.next_venue_order_id()[1], j.next_venue_order_id()[1]}
    vo = VenueOrder("1-v2", venue_seq=2, symbol=0, side=1, order_type=1, qty_lots=1, lot=1.0)
    j.write(new_venue_orders=[vo])
    j.close()
    j = Journal(path, synchronous="NORMAL")
    assert j.begin_run() == 2
    seq, cid = j.next_venue_order_id()
    assert (seq, cid) == (3, "2-v3")  # n continues from the journal
    assert j.intent_client_id(0, 5) not in first
    assert [r["run_id"] for r in j.runs()] == [1, 2]


def test_survives_reopen(tmp_path, journal):
    o = intent(journal, 0)
    journal.write(new_intents=[o])
    o.advance(S.ACCEPTED)
    journal.write(intent_updates=[o], fills=[fill(o, 4)])
    o.advance(S.PARTIALLY_FILLED)
    journal.write(intent_updates=[o])
    journal.close()
    j2 = Journal(tmp_path / "j.sqlite")
    (back,) = j2.open_orders()
    assert back.client_order_id == o.client_order_id and back.state is S.PARTIALLY_FILLED
    assert back.qty_lots == 10 and back.lot == 0.1
    assert j2.positions_from_fills() == {(0, 0, 0, 0): 4 * 0.1}


def test_same_intent_never_journaled_twice(journal):
    journal.write(new_intents=[intent(journal, 0)])
    other = intent(journal, 1)
    dup = intent(journal, 0)
    dup.client_order_id = "something-else"
    with pytest.raises(sqlite3.IntegrityError):
        journal.write(new_intents=[other, dup])
    # the whole batch was rolled back
    assert journal.order(other.client_order_id) is None
    assert journal.state_counts()[S.NEW] == 1


def test_epoch_scopes_dedupe(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path, synchronous="NORMAL")
    j.begin_run(epoch="queues-A")
    j.write(new_intents=[intent(j, s, host=3) for s in range(5)])
    j.begin_run(epoch="queues-A")  # restart, queues survived
    assert j.journaled_seqs(3, [2, 4, 5, 9]) == {2, 4}
    assert j.max_intent_seqs(epoch="queues-A") == {3: 4}
    assert j.max_intent_seqs() == {}  # nothing in the current run yet
    j.begin_run()  # queues recreated: a scope of its own
    assert j.journaled_seqs(3, [2, 4]) == set()
    j.write(new_intents=[intent(j, 2, host=3)])  # same (host, seq), new scope: allowed
    assert j.max_intent_seqs() == {3: 2}


def test_illegal_transition_leaves_row_untouched(journal):
    o = intent(journal, 0)
    o.advance(S.REJECTED)
    journal.write(new_intents=[o])
    o.steps.append(S.ACCEPTED)  # bypass the in-memory check: the journal must catch it
    o.state = S.ACCEPTED
    with pytest.raises(IllegalTransition, match=o.client_order_id):
        journal.write(intent_updates=[o])
    assert journal.order(o.client_order_id).state is S.REJECTED
    with pytest.raises(IllegalTransition, match="REJECTED -> FILLED"):
        journal.set_state(o.client_order_id, S.FILLED)
    assert journal.order(o.client_order_id).state is S.REJECTED


def test_set_state(journal):
    o = intent(journal, 0)
    journal.write(new_intents=[o])
    assert (
        journal.set_state(o.client_order_id, S.REJECTED, reason=3, reason_text="op") is S.REJECTED
    )
    back = journal.order(o.client_order_id)
    assert (back.state, back.reason, back.reason_text) == (S.REJECTED, 3, "op")
    with pytest.raises(KeyError):
        journal.set_state("nope", S.REJECTED)


def test_stale_update_is_refused(journal):
    o = intent(journal, 0)
    journal.write(new_intents=[o])
    stale = journal.order(o.client_order_id)
    o.advance(S.SUBMITTED)
    journal.write(intent_updates=[o])
    stale.advance(S.REJECTED)  # legal from NEW, but the row is no longer NEW
    with pytest.raises(JournalError, match="another state"):
        journal.write(intent_updates=[stale])
    assert journal.order(o.client_order_id).state is S.SUBMITTED


def test_venue_fill_recorded_once(journal):
    a, b = intent(journal, 0), intent(journal, 1)
    vo = VenueOrder(
        journal.next_venue_order_id()[1], venue_seq=1, symbol=0, side=1, order_type=1,
        qty_lots=20, lot=0.1, allocations=[Allocation(a.client_order_id, 10),
                                           Allocation(b.client_order_id, 10)],
    )  # fmt: skip
    journal.write(new_intents=[a, b], new_venue_orders=[vo])
    vf = VenueFill("P1", vo.client_order_id, 1.0, 100.0, 0.1, False, 5)
    shares = [fill(o, 5, venue_order_id=vo.client_order_id, venue_fill_id="P1", liquidity="venue")
              for o in (a, b)]  # fmt: skip
    journal.write(venue_fills=[vf], fills=shares)
    assert journal.known_venue_fill_ids(["P1", "P2"]) == {"P1"}
    with pytest.raises(sqlite3.IntegrityError):
        journal.write(venue_fills=[vf], fills=shares)
    assert journal.fill_count() == 2
    (back,) = journal.open_venue_orders()
    assert [(x.client_order_id, x.lots) for x in back.allocations] == [
        (a.client_order_id, 10), (b.client_order_id, 10)]  # fmt: skip


def test_positions_from_fills_exact(journal):
    o = intent(journal, 0, lots=10_000)
    s = intent(journal, 1, agent=1, lots=10_000, side=-1)
    journal.write(new_intents=[o, s], fills=[fill(o, 1) for _ in range(1000)] + [fill(s, 3)])
    pos = journal.positions_from_fills()
    # 1000 fills of 0.1 summed as floats would drift; in lots it is exact
    assert pos[(0, 0, 0, 0)] == 1000 * 0.1
    assert pos[(0, 0, 1, 0)] == -3 * 0.1
    assert len(journal.fills(o.client_order_id)) == 1000


def test_state_counts_and_drained(journal):
    os_ = [intent(journal, i) for i in range(3)]
    os_[0].advance(S.REJECTED)
    journal.write(new_intents=os_)
    counts = journal.state_counts()
    assert counts[S.NEW] == 2 and counts[S.REJECTED] == 1 and counts[S.FILLED] == 0
    journal.record_drained({0: 2, 1: 7}, now_ns=9)
    run = journal.runs()[-1]
    assert run["stopped_ns"] == 9 and run["drained"] == {0: 2, 1: 7}


def test_garbage_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notajournal.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError, match=r"notajournal\.sqlite"):
        Journal(bad)


def test_foreign_sqlite_file_is_refused(tmp_path):
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    with pytest.raises(JournalError, match=r"other\.db.*not a dynamind journal"):
        Journal(other)


def test_readonly_reader(tmp_path, journal):
    journal.write(new_intents=[intent(journal, 0)])
    ro = Journal(tmp_path / "j.sqlite", readonly=True)
    assert ro.state_counts()[S.NEW] == 1
    with pytest.raises(sqlite3.OperationalError):
        ro.begin_run()
    with pytest.raises(JournalError):
        Journal(tmp_path / "missing.sqlite", readonly=True)


def test_write_needs_a_run(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(JournalError, match="begin_run"):
        j.write()

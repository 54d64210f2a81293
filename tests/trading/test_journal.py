import sqlite3

import pytest

from appliance.model.orders import (
    Allocation,
    Fill,
    IllegalTransition,
    IntentOrder,
    OrderState,
    VenueOrder,
)
from appliance.trading.journal import Journal, JournalError, LayoutMismatch, layout_problems
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
    v = vo.client_order_id
    assert journal.known_venue_fill_ids([(v, "P1"), (v, "P2"), ("1-v9", "P1")]) == {(v, "P1")}
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


def test_venue_fill_ids_are_keyed_per_venue_order(journal):
    # Some venues number fills per order (the paper venue restarts at P1 with a new state
    # file): the same fill id on another venue order is another fill.
    a, b = intent(journal, 0), intent(journal, 1)
    vos = [
        VenueOrder(journal.next_venue_order_id()[1], venue_seq=i + 1, symbol=0, side=1,
                   order_type=1, qty_lots=10, lot=0.1,
                   allocations=[Allocation(o.client_order_id, 10)])
        for i, o in enumerate((a, b))
    ]  # fmt: skip
    journal.write(new_intents=[a, b], new_venue_orders=vos)
    for o, vo in zip((a, b), vos, strict=True):
        journal.write(
            venue_fills=[VenueFill("P1", vo.client_order_id, 1.0, 100.0, 0.0, False, 5)],
            fills=[fill(o, 10, venue_order_id=vo.client_order_id, venue_fill_id="P1",
                        liquidity="venue")],
        )  # fmt: skip
    keys = [(vo.client_order_id, "P1") for vo in vos]
    assert journal.known_venue_fill_ids(keys) == set(keys)
    assert journal.positions_from_fills() == {(0, 0, 0, 0): 2.0}


def held(
    j: Journal,
    agent: int,
    symbol: int,
    lots: int,
    lot: float = 0.1,
    seq: int = 0,
    population: int = 0,
):
    o = IntentOrder(j.intent_client_id(0, seq), population=population, agent=agent,
                    intent_seq=seq, symbol=symbol, side=1 if lots > 0 else -1, order_type=1,
                    qty_lots=abs(lots), lot=lot, created_ns=1)  # fmt: skip
    j.write(new_intents=[o], fills=[fill(o, abs(lots))])


def test_layout_problems(tmp_path):
    path = tmp_path / "j.sqlite"
    syms, lots, agents = ["A", "B", "C"], [0.1, 0.1, 0.1], {(0, 0): 4, (0, 1): 2}
    assert layout_problems(path, syms, lots, agents) == []  # no journal yet
    j = Journal(path, synchronous="NORMAL")
    j.begin_run(symbols=syms, lots=lots, agents=agents)
    assert j.layout_problems(["X"], [1.0], {}) == []  # nothing held: anything goes
    held(j, agent=3, symbol=1, lots=5)  # agent 3 of (0, 0) long B
    held(j, agent=1, symbol=2, lots=2, seq=1, population=1)  # agent 1 of (0, 1) long C
    held(j, agent=0, symbol=0, lots=2, seq=2)
    held(j, agent=0, symbol=0, lots=-2, seq=3)  # A: flat again
    assert j.last_layout() == {"symbols": syms, "lots": lots, "agents": [[0, 0, 4], [0, 1, 2]]}
    ok = [
        (syms, lots, agents),
        (["Z", "B", "C"], [9.0, 0.1, 0.1], agents),  # flat A replaced, its lot changed
        ([*syms, "D"], [*lots, 1.0], {(0, 0): 4, (0, 1): 2, (1, 0): 9}),  # appended
        (syms, lots, {(0, 0): 4, (0, 1): 2}),
        (syms, lots, None),  # agents not checked
    ]
    for s, lt, ag in ok:
        assert j.layout_problems(s, lt, ag) == [], (s, lt, ag)
    (p,) = j.layout_problems(syms, [0.1, 0.01, 0.1], agents)
    assert "symbol B (index 1): lot size 0.1 -> 0.01" in p and "agent 3" in p
    b, c = j.layout_problems(["A", "C", "B"], lots, agents)
    assert b.startswith("symbol B (index 1) is now index 2 (index 1 is now C)")
    assert c.startswith("symbol C (index 2) is now index 1 (index 2 is now B)")
    problems = j.layout_problems(["A", "B"], [0.1, 0.1], agents)
    assert problems == [
        "symbol C (index 2) is no longer configured: positions open (1 agent(s), e.g. host 0 "
        "population 1 agent 1)"
    ]
    (p,) = j.layout_problems(syms, lots, {(0, 0): 3, (0, 1): 2})
    assert p.startswith("host 0 population 0 now has 3 agents (was 4)") and "agent 3" in p
    (p,) = j.layout_problems(syms, lots, {(0, 0): 4})
    assert p.startswith("host 0 population 1 no longer exists (was 2)")
    # the module-level check (for the supervisor) opens read-only, alongside the writer
    assert layout_problems(path, ["A", "C", "B"], lots, agents) == j.layout_problems(
        ["A", "C", "B"], lots, agents
    )
    assert "symbol B" in str(LayoutMismatch(path, [p, "symbol B"]))
    j.close()


def _downgrade_to_v1(path):
    """Rewrite a journal to the version-1 schema (fill ids keyed alone, no runs.layout)."""
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript("""
        BEGIN;
        CREATE TABLE vf1 (
            venue_fill_id  TEXT PRIMARY KEY,
            venue_order_id TEXT NOT NULL REFERENCES venue_orders(client_order_id),
            qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL,
            maker INTEGER NOT NULL, ts_ns INTEGER NOT NULL);
        INSERT INTO vf1 SELECT venue_fill_id, venue_order_id, qty, price, fee, maker, ts_ns
            FROM venue_fills;
        CREATE TABLE f1 (
            fill_id INTEGER PRIMARY KEY AUTOINCREMENT,
            client_order_id TEXT NOT NULL REFERENCES orders(client_order_id),
            venue_order_id TEXT REFERENCES venue_orders(client_order_id),
            venue_fill_id TEXT REFERENCES venue_fills(venue_fill_id),
            side INTEGER NOT NULL, qty REAL NOT NULL, price REAL NOT NULL, fee REAL NOT NULL,
            liquidity TEXT NOT NULL CHECK (liquidity IN ('internal', 'venue')),
            ts_ns INTEGER NOT NULL,
            UNIQUE (venue_fill_id, client_order_id));
        INSERT INTO f1 SELECT * FROM fills;
        DROP TABLE fills; DROP TABLE venue_fills;
        ALTER TABLE vf1 RENAME TO venue_fills; ALTER TABLE f1 RENAME TO fills;
        CREATE INDEX fills_order ON fills(client_order_id);
        ALTER TABLE runs DROP COLUMN layout;
        PRAGMA user_version = 1;
        COMMIT;
    """)
    c.close()


def buy_covering(j: Journal, o, venue_seq: int) -> VenueOrder:
    """A venue buy of 10 lots of 0.1 covering intent order ``o``."""
    return VenueOrder(
        j.next_venue_order_id()[1],
        venue_seq=venue_seq,
        symbol=0,
        side=1,
        order_type=1,
        qty_lots=10,
        lot=0.1,
        allocations=[Allocation(o.client_order_id, 10)],
    )


def test_version_1_journal_is_read_then_upgraded(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path, synchronous="NORMAL")
    j.begin_run(symbols=["A"], lots=[0.1])
    o = intent(j, 0)
    vo = buy_covering(j, o, 1)
    j.write(new_intents=[o], new_venue_orders=[vo])
    j.write(venue_fills=[VenueFill("P1", vo.client_order_id, 0.5, 100.0, 0.0, False, 5)],
            fills=[fill(o, 5, venue_order_id=vo.client_order_id, venue_fill_id="P1",
                        liquidity="venue")])  # fmt: skip
    j.close()
    _downgrade_to_v1(path)
    ro = Journal(path, readonly=True)  # a reader does not upgrade: it copes
    assert ro.schema_version == 1 and ro.last_layout() is None
    assert ro.layout_problems(["A"], [0.1], None) == []
    assert "lot size 0.1 -> 1" in ro.layout_problems(["A"], [1.0], None)[0]
    ro.close()
    j = Journal(path, synchronous="NORMAL")  # the writer upgrades in place
    assert j.schema_version == 2 and j._conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert j._conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert j.positions_from_fills() == {(0, 0, 0, 0): 0.5}
    assert j.known_venue_fill_ids([(vo.client_order_id, "P1")]) == {(vo.client_order_id, "P1")}
    j.begin_run(symbols=["A"], lots=[0.1])
    o2 = intent(j, 1)
    vo2 = buy_covering(j, o2, 2)
    j.write(new_intents=[o2], new_venue_orders=[vo2])
    j.write(venue_fills=[VenueFill("P1", vo2.client_order_id, 1.0, 100.0, 0.0, False, 5)],
            fills=[fill(o2, 10, venue_order_id=vo2.client_order_id, venue_fill_id="P1",
                        liquidity="venue")])  # fmt: skip
    assert [f.venue_order_id for f in j.fills()] == [vo.client_order_id, vo2.client_order_id]
    assert j.positions_from_fills() == {(0, 0, 0, 0): 1.5}
    j.close()


def test_newer_journal_is_refused(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    c = sqlite3.connect(path)
    c.execute("PRAGMA user_version = 99")
    c.close()
    with pytest.raises(JournalError, match="schema version 99, expected 2"):
        Journal(path)

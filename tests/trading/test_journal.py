import sqlite3

import pytest

from appliance.model.orders import Allocation, IllegalTransition, OrderState, VenueOrder
from appliance.trading import checkpoint
from appliance.trading.journal import SCHEMA_VERSION, Journal, JournalError
from appliance.trading.layout_check import journal_problems
from appliance.trading.recovery_reads import OPEN_STATES
from appliance.venues.base import VenueFill

S = OrderState


@pytest.fixture
def journal(tmp_path):
    j = Journal(tmp_path / "j.sqlite", synchronous="NORMAL")
    j.begin_run(now_ns=1)
    yield j
    j.close()


def test_wal_and_schema(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    assert j._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert j._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    tables = {r[0] for r in j._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "orders", "venue_orders", "venue_order_intents", "fills"} <= tables


def test_runs_and_ids_unique_across_restarts(tmp_path, journal_rows):
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
    assert [r.run_id for r in journal_rows.runs(j)] == [1, 2]


def test_survives_reopen(tmp_path, journal, intent, fill):
    o = intent(journal, 0)
    journal.write(new_intents=[o])
    o.advance(S.ACCEPTED)
    journal.write(intent_updates=[o], fills=[fill(o, 4)])
    o.advance(S.PARTIALLY_FILLED)
    journal.write(intent_updates=[o])
    journal.close()
    j2 = Journal(tmp_path / "j.sqlite")
    (back,) = j2.reads.open_orders()
    assert back.client_order_id == o.client_order_id and back.state is S.PARTIALLY_FILLED
    assert back.qty_lots == 10 and back.lot == 0.1
    assert j2.reads.positions_from_fills() == {(0, 0, 0, 0): 4 * 0.1}


def test_same_intent_never_journaled_twice(journal, journal_rows, intent):
    journal.write(new_intents=[intent(journal, 0)])
    other = intent(journal, 1)
    dup = intent(journal, 0)
    dup.client_order_id = "something-else"
    with pytest.raises(sqlite3.IntegrityError):
        journal.write(new_intents=[other, dup])
    # the whole batch was rolled back
    assert journal_rows.order(journal, other.client_order_id) is None
    assert journal_rows.state_counts(journal) == {S.NEW: 1}


def test_epoch_scopes_dedupe(tmp_path, intent):
    path = tmp_path / "j.sqlite"
    j = Journal(path, synchronous="NORMAL")
    j.begin_run(epoch="queues-A")
    j.write(new_intents=[intent(j, s, host=3) for s in range(5)])
    j.begin_run(epoch="queues-A")  # restart, queues survived
    assert j.reads.journaled_seqs(j.epoch, 3, [2, 4, 5, 9]) == {2, 4}
    assert j.reads.max_intent_seqs(j.epoch) == {3: 4}
    j.begin_run()  # queues recreated: a scope of its own
    assert (
        j.reads.journaled_seqs(j.epoch, 3, [2, 4]) == set()
        and j.reads.max_intent_seqs(j.epoch) == {}
    )
    j.write(new_intents=[intent(j, 2, host=3)])  # same (host, seq), new scope: allowed
    assert j.reads.max_intent_seqs(j.epoch) == {3: 2}


def test_illegal_transition_leaves_row_untouched(journal, journal_rows, intent):
    o = intent(journal, 0)
    o.advance(S.REJECTED)
    journal.write(new_intents=[o])
    o.steps.append(S.FILLED)  # bypass the in-memory check: the journal must catch it
    o.state = S.FILLED
    with pytest.raises(IllegalTransition, match=f"{o.client_order_id}.*REJECTED -> FILLED"):
        journal.write(intent_updates=[o])
    assert journal_rows.order(journal, o.client_order_id).state is S.REJECTED


def test_stale_update_is_refused(journal, journal_rows, intent):
    o = intent(journal, 0)
    journal.write(new_intents=[o])
    (stale,) = journal.reads.open_orders()
    o.advance(S.SUBMITTED)
    journal.write(intent_updates=[o])
    stale.advance(S.REJECTED)  # legal from NEW, but the row is no longer NEW
    with pytest.raises(JournalError, match="another state"):
        journal.write(intent_updates=[stale])
    assert journal_rows.order(journal, o.client_order_id).state is S.SUBMITTED


def test_venue_fill_recorded_once(journal, intent, fill):
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
    assert journal.reads.known_venue_fill_ids([(v, "P1"), (v, "P2"), ("1-v9", "P1")]) == {(v, "P1")}
    with pytest.raises(sqlite3.IntegrityError):
        journal.write(venue_fills=[vf], fills=shares)
    assert len(journal.reads.fills()) == 2
    (back,) = journal.reads.open_venue_orders()
    assert [(x.client_order_id, x.lots) for x in back.allocations] == [
        (a.client_order_id, 10), (b.client_order_id, 10)]  # fmt: skip


def test_positions_from_fills_exact(journal, intent, fill):
    o = intent(journal, 0, lots=10_000)
    s = intent(journal, 1, agent=1, lots=10_000, side=-1)
    journal.write(new_intents=[o, s], fills=[fill(o, 1) for _ in range(1000)] + [fill(s, 3)])
    pos = journal.reads.positions_from_fills()
    # 1000 fills of 0.1 summed as floats would drift; in lots it is exact
    assert pos[(0, 0, 0, 0)] == 1000 * 0.1
    assert pos[(0, 0, 1, 0)] == -3 * 0.1
    assert sum(f.client_order_id == o.client_order_id for f in journal.reads.fills()) == 1000


def test_open_orders_and_drained(journal, journal_rows, intent):
    os_ = [intent(journal, i) for i in range(3)]
    os_[0].advance(S.REJECTED)
    journal.write(new_intents=os_)
    assert journal_rows.state_counts(journal) == {S.NEW: 2, S.REJECTED: 1}
    assert [o.client_order_id for o in journal.reads.open_orders()] == [
        o.client_order_id for o in os_[1:]
    ]
    journal.record_drained({0: 2, 1: 7}, now_ns=9)
    run = journal_rows.runs(journal)[-1]
    assert run.stopped_ns == 9 and run.drained == {"0": 2, "1": 7}


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


def test_readonly_reader(tmp_path, journal, intent):
    journal.write(new_intents=[intent(journal, 0)])
    ro = Journal(tmp_path / "j.sqlite", readonly=True)
    assert [o.state for o in ro.reads.open_orders()] == [S.NEW]
    with pytest.raises(sqlite3.OperationalError):
        ro.begin_run()
    with pytest.raises(JournalError):
        Journal(tmp_path / "missing.sqlite", readonly=True)


def test_write_needs_a_run(tmp_path):
    j = Journal(tmp_path / "j.sqlite")
    with pytest.raises(JournalError, match="begin_run"):
        j.write()


def test_venue_fill_ids_are_keyed_per_venue_order(journal, intent, fill):
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
    assert journal.reads.known_venue_fill_ids(keys) == set(keys)
    assert journal.reads.positions_from_fills() == {(0, 0, 0, 0): 2.0}


def _index_sql(c) -> dict[str, str]:
    rows = c.execute("SELECT name, sql FROM sqlite_master WHERE name LIKE '%orders_open'")
    return dict(rows)


def _downgrade_to_v4(path):
    """Rewrite a journal to the version-4 schema (no positions checkpoint)."""
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript(
        "BEGIN; DROP TABLE positions; DROP TABLE positions_mark; PRAGMA user_version = 4; COMMIT;"
    )
    c.close()


def _downgrade_to_v3(path):
    """Rewrite a journal to the version-3 schema (no trading_states)."""
    _downgrade_to_v4(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript("BEGIN; DROP TABLE trading_states; PRAGMA user_version = 3; COMMIT;")
    c.close()


def _downgrade_to_v2(path):
    """Rewrite a journal to the version-2 schema (open-order indexes on "state < 5")."""
    _downgrade_to_v3(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.executescript("""
        BEGIN;
        DROP INDEX orders_open; DROP INDEX venue_orders_open;
        CREATE INDEX orders_open ON orders(state) WHERE state < 5;
        CREATE INDEX venue_orders_open ON venue_orders(state) WHERE state < 5;
        PRAGMA user_version = 2;
        COMMIT;
    """)
    c.close()


def _downgrade_to_v1(path):
    """Rewrite a journal to the version-1 schema (fill ids keyed alone, no runs.layout)."""
    _downgrade_to_v2(path)
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


def test_version_1_journal_is_read_then_upgraded(tmp_path, intent, fill):
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
    assert journal_problems(ro, ["A"], [0.1], None) == []
    assert "lot size 0.1 -> 1" in journal_problems(ro, ["A"], [1.0], None)[0]
    ro.close()
    j = Journal(path, synchronous="NORMAL")  # the writer upgrades in place
    assert j.schema_version == SCHEMA_VERSION
    assert j._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert j._conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert j.reads.positions_from_fills() == {(0, 0, 0, 0): 0.5}
    assert j.reads.known_venue_fill_ids([(vo.client_order_id, "P1")]) == {
        (vo.client_order_id, "P1")
    }
    j.begin_run(symbols=["A"], lots=[0.1])
    o2 = intent(j, 1)
    vo2 = buy_covering(j, o2, 2)
    j.write(new_intents=[o2], new_venue_orders=[vo2])
    j.write(venue_fills=[VenueFill("P1", vo2.client_order_id, 1.0, 100.0, 0.0, False, 5)],
            fills=[fill(o2, 10, venue_order_id=vo2.client_order_id, venue_fill_id="P1",
                        liquidity="venue")])  # fmt: skip
    assert [f.venue_order_id for f in j.reads.fills()] == [vo.client_order_id, vo2.client_order_id]
    assert j.reads.positions_from_fills() == {(0, 0, 0, 0): 1.5}
    j.close()


def test_version_2_journal_is_upgraded_to_indexes_that_name_the_states(tmp_path, intent):
    path = tmp_path / "j.sqlite"
    j = Journal(path, synchronous="NORMAL")
    j.begin_run()
    done, live = intent(j, 0), intent(j, 1)
    done.advance(S.REJECTED)
    vo = buy_covering(j, live, 1)
    j.write(new_intents=[done, live], new_venue_orders=[vo])
    j.close()
    _downgrade_to_v2(path)
    ro = Journal(path, readonly=True)  # a reader copes with the old indexes
    assert ro.schema_version == 2 and "state < 5" in _index_sql(ro._conn)["orders_open"]
    assert [o.client_order_id for o in ro.reads.open_orders()] == [live.client_order_id]
    ro.close()
    j = Journal(path, synchronous="NORMAL")  # the writer upgrades in place
    assert j.schema_version == SCHEMA_VERSION
    # NEW, SUBMITTED, ACCEPTED, PARTIALLY_FILLED
    named = "WHERE (state = 1 OR state = 2 OR state = 3 OR state = 4)"
    assert all(sql.endswith(named) for sql in _index_sql(j._conn).values())
    assert [o.client_order_id for o in j.reads.open_orders()] == [live.client_order_id]
    assert [v.client_order_id for v in j.reads.open_venue_orders()] == [vo.client_order_id]
    for table in ("orders", "venue_orders"):  # the queries still use the partial indexes
        plan = j._conn.execute(
            f"EXPLAIN QUERY PLAN SELECT client_order_id FROM {table} WHERE {OPEN_STATES}"
        ).fetchall()
        assert f"INDEX {table}_open" in str(plan), plan
    j.close()


def test_version_4_journal_is_upgraded_and_a_start_replays_it_whole(tmp_path, make_engine, intents):
    e = make_engine()
    e.process(intents([{"seq": s, "agent": s % 3, "qty": 0.5 + s} for s in range(6)]))
    fills = e.portfolio.fill_count
    assert fills > 0
    e.close()
    _downgrade_to_v4(tmp_path / "journal.sqlite")
    ro = Journal(tmp_path / "journal.sqlite", readonly=True)  # a reader copes without it
    assert ro.schema_version == 4
    assert checkpoint.open_positions(ro) == sorted(ro.reads.open_positions())
    ro.close()
    e = make_engine()  # the writer upgrades; no checkpoint yet: every fill is replayed
    assert e.journal.schema_version == SCHEMA_VERSION
    assert e.summary.fills_replayed == fills and e.portfolio.fill_count == fills
    e.record_drained({0: 6})
    e.close()
    e = make_engine()
    assert e.summary.fills_replayed == 0 and e.portfolio.fill_count == fills


def test_newer_journal_is_refused(tmp_path):
    path = tmp_path / "j.sqlite"
    Journal(path).close()
    c = sqlite3.connect(path)
    c.execute("PRAGMA user_version = 99")
    c.close()
    with pytest.raises(JournalError, match=f"schema version 99, expected {SCHEMA_VERSION}"):
        Journal(path)

"""The positions checkpoint: a start replays only the fills after it, exactly."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from appliance.model.records import OrderType, Side
from appliance.trading import checkpoint
from appliance.trading.archive import archive_runs
from appliance.trading.journal import Journal
from appliance.trading.portfolio import Portfolio

NEVER = 10**9  # no periodic checkpoint: only the clean stop writes one


def bits(p: Portfolio) -> dict:
    """Every position's state, floats as hex: equal only if bit for bit equal."""
    return {
        k: (pos.lot.hex(), pos.lots, pos.avg_price.hex(), pos.realized.hex(), pos.fees.hex())
        for k, pos in p._pos.items()
    }


def replayed_all(j: Journal) -> Portfolio:
    p = Portfolio()
    p.apply_all(j.reads.fills())
    return p


def n_fills(j: Journal) -> int:
    return j._conn.execute("SELECT count(*) FROM fills").fetchone()[0]


def mark(j: Journal) -> tuple[int, int]:
    """(fill id, fills) of the checkpoint; (0, 0): none."""
    return j._conn.execute("SELECT fill_id, fills FROM positions_mark").fetchone() or (0, 0)


@pytest.fixture
def trade(intents, quotes):
    """trade(engine, rng, n): n random market and limit intents in batches of 8, with the
    quotes moving between batches (fills at many prices, partial closes, flips, fees)."""

    def run(e, rng: np.random.Generator, n: int) -> None:
        seq0 = e.journal.reads.max_intent_seqs(e.journal.epoch).get(0, -1) + 1
        for k in range(0, n, 8):
            mid = 100.0 * float(np.exp(rng.normal(0, 0.01)))
            e.on_ticks(quotes([0, 1], [mid, mid / 10], [mid + 0.5, mid / 10 + 0.05], size=50.0))
            rows = [
                {"seq": seq0 + k + i, "agent": int(rng.integers(5)),
                 "symbol": int(rng.integers(2)),
                 "side": int(rng.choice([Side.BUY, Side.SELL])),
                 "qty": float(rng.integers(1, 4000)) / 1000,
                 "order_type": OrderType.LIMIT if rng.random() < 0.2 else OrderType.MARKET,
                 "limit_price": mid * float(1 + rng.normal(0, 0.003))}
                for i in range(min(8, n - k))
            ]  # fmt: skip
            e.process(intents(rows))

    return run


def spy_fills(j: Journal) -> list[int]:
    """Count the fills ``j.reads.fills`` returns from now on (what a start reads)."""
    read: list[int] = []
    real = j.reads.fills

    def fills(*a, **kw):
        out = real(*a, **kw)
        read.append(len(out))
        return out

    j.reads.fills = fills
    return read


def test_start_reads_only_the_fills_after_the_checkpoint(make_engine, trade):
    rng = np.random.default_rng(1)
    e = make_engine(checkpoint_fills=NEVER)
    trade(e, rng, 400)
    e.record_drained({0: 400})  # clean stop: checkpoint
    before = n_fills(e.journal)
    assert before > 300 and mark(e.journal)[1] == before
    e.close()

    e = make_engine(checkpoint_fills=NEVER)
    assert e.summary.fills_replayed == 0
    trade(e, rng, 24)  # then a crash: no checkpoint of these
    after = n_fills(e.journal) - before
    assert after > 0
    del e

    e = make_engine(checkpoint_fills=NEVER, recover=False)
    read = spy_fills(e.journal)
    e.summary = e.recover("queues-1")
    assert read == [after] and e.summary.fills_replayed == after
    assert "fills replayed" in str(e.summary)
    full = replayed_all(e.journal)
    assert bits(e.portfolio) == bits(full) and e.portfolio.fill_count == before + after
    assert checkpoint.open_positions(e.journal) == sorted(e.journal.reads.open_positions())
    # trading on from the checkpoint stays exact too
    trade(e, rng, 40)
    assert bits(e.portfolio) == bits(replayed_all(e.journal))


def test_checkpoint_every_n_fills_bounds_what_a_crash_replays(make_engine, trade):
    rng = np.random.default_rng(2)
    e = make_engine(checkpoint_fills=25)
    for _ in range(12):
        trade(e, rng, 8)
        assert e.portfolio.fill_count - mark(e.journal)[1] < 25
    total, (_, marked) = n_fills(e.journal), mark(e.journal)
    assert total > 100 and marked > 0
    del e  # crash
    e = make_engine(checkpoint_fills=25)
    assert e.summary.fills_replayed == total - marked < 25
    assert bits(e.portfolio) == bits(replayed_all(e.journal))


@pytest.mark.parametrize("seed", range(3))
def test_checkpoints_and_crashes_equal_a_full_replay_bit_for_bit(
    make_engine, trade, crash_on, seed
):
    rng = np.random.default_rng(seed)
    e = make_engine(checkpoint_fills=int(rng.integers(3, 30)))
    for _ in range(15):
        if rng.random() < 0.3:  # a crash: in a journal write, or after it in the checkpoint
            target = (e.journal, "write") if rng.random() < 0.5 else (e._checkpoint, "save")
            crash_on(*target, int(rng.integers(1, 3)))
            with contextlib.suppress(crash_on.Crash):
                trade(e, rng, 16)
            e = make_engine(checkpoint_fills=int(rng.integers(3, 30)))
        trade(e, rng, 16)
        assert bits(e.portfolio) == bits(replayed_all(e.journal))
    e.record_drained({0: 0})
    e = make_engine()
    assert e.summary.fills_replayed == 0
    assert bits(e.portfolio) == bits(replayed_all(e.journal))


def test_archive_drops_the_checkpoint(tmp_path, make_engine, trade):
    rng = np.random.default_rng(5)
    e = make_engine(checkpoint_fills=NEVER)
    trade(e, rng, 200)
    e.record_drained({0: 200})
    e.close()
    journal = tmp_path / "journal.sqlite"
    summary = archive_runs(journal, 2**62, tmp_path / "archive.sqlite")
    assert summary.fills > 0
    e = make_engine(checkpoint_fills=NEVER)
    # the realised PnL and fees of the archived fills left with them: a start replays
    # what stayed (carry fills included), not the old checkpoint
    assert e.summary.fills_replayed == n_fills(e.journal)
    assert bits(e.portfolio) == bits(replayed_all(e.journal))


def test_a_checkpoint_beyond_the_fills_is_ignored_and_replaced(make_engine, trade):
    rng = np.random.default_rng(6)
    e = make_engine(checkpoint_fills=NEVER)
    trade(e, rng, 100)
    e.record_drained({0: 100})
    c = e.journal._conn  # a mark past the last fill, and a row no fill made
    c.execute("UPDATE positions_mark SET fill_id = fill_id + 1000")
    c.execute("INSERT INTO positions VALUES (9, 9, 9, 0, 0.001, 5, 1.0, 0.0, 0.0)")
    e.close()
    e = make_engine(checkpoint_fills=NEVER)
    assert e.summary.fills_replayed == n_fills(e.journal)
    e.record_drained({0: 0})
    e.close()
    e = make_engine(checkpoint_fills=NEVER)
    assert e.summary.fills_replayed == 0 and (9, 9, 9, 0) not in e.portfolio._pos
    assert bits(e.portfolio) == bits(replayed_all(e.journal))

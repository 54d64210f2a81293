"""EmaCross and the target-position base: EMA exactness, order gating, reports, snapshots."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from appliance.agents import POPULATIONS, EmaCross, make_population
from appliance.model.records import INTENT, REPORT, TICK, OrderType, RejectReason, ReportKind, Side

SECOND = 1_000_000_000


def ticks(symbols: list[int], mids: list[float] | np.ndarray, recv_ns: int = 1) -> np.ndarray:
    """TICK records with the given symbols and mid prices (spread of 0.02)."""
    out = np.zeros(len(symbols), dtype=TICK)
    out["symbol"] = symbols
    out["bid"] = np.asarray(mids) - 0.01
    out["ask"] = np.asarray(mids) + 0.01
    out["recv_ns"] = recv_ns + np.arange(len(symbols))
    out["kind"] = 1
    return out


def naive_ema(prices: np.ndarray, period: int) -> float:
    a = 2.0 / (period + 1.0)
    ema = prices[0]
    for x in prices[1:]:
        ema = ema + a * (x - ema)
    return ema


def report(
    agent: int,
    kind: ReportKind,
    side: int,
    qty: float = 0.0,
    final: bool = True,
    reason: RejectReason = RejectReason.NONE,
    ts_ns: int = 0,
) -> np.ndarray:
    r = np.zeros(1, dtype=REPORT)
    r["agent"] = agent
    r["kind"] = kind
    r["side"] = side
    r["fill_qty"] = qty
    r["fill_price"] = 100.0
    r["final"] = final
    r["reason"] = reason
    r["ts_ns"] = ts_ns
    return r


def warm(pop: EmaCross, symbol: int, prices: np.ndarray, now_ns: int = 0):
    return pop.step(pop.prepare(ticks([symbol] * len(prices), prices)), now_ns)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_ema_equals_naive_loop(backend):
    rng = np.random.default_rng(3)
    params = {"fast": [2, 9], "slow": [20, 60], "qty": 1.0}
    pop = EmaCross(40, [2, 5], params, seed=11, backend=backend)
    # Interleaved symbols, one batch longer than a chunk, one empty, plus a third symbol
    # the population does not trade.
    sizes = [1, 7, 2 * 1024 + 300, 0, 130]
    history: dict[int, list[float]] = {2: [], 5: []}
    for size in sizes:
        sym = rng.choice([2, 5, 9], size=size)
        mids = 100 + np.cumsum(rng.normal(0, 0.5, size))
        pop.step(pop.prepare(ticks(list(sym), mids)), 0)
        for s in (2, 5):
            history[s].extend(mids[sym == s])
    for agent in range(pop.n_agents):
        prices = np.array(history[int(pop.agent_symbol[agent])])
        assert pop.group_seen[pop.agent_group[agent]] == len(prices)
        assert pop.ema_fast[agent] == naive_ema(prices, pop.fast_period[agent])
        assert pop.ema_slow[agent] == naive_ema(prices, pop.slow_period[agent])


def test_agents_are_dealt_to_symbols_in_blocks_with_drawn_periods():
    pop = EmaCross(10, [3, 1], {"fast": [5, 6], "slow": [50, 51]}, seed=1)
    assert list(pop.agent_symbol) == [3] * 5 + [1] * 5
    assert set(pop.fast_period) <= {5, 6} and set(pop.slow_period) <= {50, 51}
    again = EmaCross(10, [3, 1], {"fast": [5, 6], "slow": [50, 51]}, seed=1)
    assert np.array_equal(pop.fast_period, again.fast_period)


def test_no_intent_during_warmup_then_target_position():
    pop = EmaCross(4, [0], {"fast": [3, 3], "slow": [10, 10], "qty": 0.5}, seed=0)
    assert len(warm(pop, 0, np.linspace(100, 101, 9))) == 0  # 9 < slow period
    out = warm(pop, 0, np.linspace(101, 102, 5))  # rising: fast EMA above slow
    assert list(out.agent) == [0, 1, 2, 3]
    assert (out.side == Side.BUY).all() and (out.qty == 0.5).all()
    assert (out.order_type == OrderType.MARKET).all() and (out.limit_price == 0).all()
    assert (out.symbol == 0).all()
    assert pop.pending.all()


def test_pending_agent_sends_nothing_until_final_report():
    pop = EmaCross(2, [0], {"fast": [3, 3], "slow": [10, 10], "qty": 1.0}, seed=0)
    first = warm(pop, 0, np.linspace(100, 110, 20))
    assert len(first) == 2
    # The trend reverses: the agents would sell, but their buys are still outstanding.
    assert len(warm(pop, 0, np.linspace(110, 90, 40))) == 0
    # A partial fill moves the position and keeps the agent pending.
    pop.on_reports(report(0, ReportKind.FILL, Side.BUY, 0.4, final=False))
    assert pop.position[0] == pytest.approx(0.4)
    assert pop.pending[0]
    assert len(warm(pop, 0, [89.0])) == 0
    pop.on_reports(report(0, ReportKind.FILL, Side.BUY, 0.6, final=True))
    assert pop.position[0] == pytest.approx(1.0)
    assert not pop.pending[0] and pop.pending[1]
    # Now free, agent 0 goes from +1 to its target -1.
    out = warm(pop, 0, [88.0])
    assert list(out.agent) == [0]
    assert out.side[0] == Side.SELL and out.qty[0] == pytest.approx(2.0)


def test_fills_in_one_batch_accumulate_and_counters():
    pop = EmaCross(3, [0], {"fast": [3, 3], "slow": [10, 10]}, seed=0)
    reports = np.concatenate(
        [
            report(1, ReportKind.ACK, Side.SELL, final=False),
            report(1, ReportKind.FILL, Side.SELL, 0.25, final=False),
            report(1, ReportKind.FILL, Side.SELL, 0.75, final=True),
            report(2, ReportKind.FILL, Side.BUY, 2.0, final=True),
            report(7, ReportKind.FILL, Side.BUY, 1.0),  # no such agent
            report(0, ReportKind.FILL, Side.BUY, -1.0),  # impossible quantity
        ]
    )
    pop.on_reports(reports)
    assert list(pop.position) == [0.0, -1.0, 2.0]
    c = pop.counters
    assert (c["acks"], c["fills"], c["bad_reports"]) == (1, 3, 2)


def test_reject_clears_pending_and_backs_off():
    pop = EmaCross(1, [0], {"fast": [3, 3], "slow": [10, 10], "reject_backoff_s": 2.0}, seed=0)
    assert len(warm(pop, 0, np.linspace(100, 110, 20), now_ns=10 * SECOND)) == 1
    pop.on_reports(
        report(0, ReportKind.REJECT, Side.BUY, reason=RejectReason.MAX_POSITION, ts_ns=10 * SECOND)
    )
    assert not pop.pending[0]
    assert pop.counters["rejects"] == 1 and pop.counters["rejects_max_position"] == 1
    assert len(warm(pop, 0, [111.0], now_ns=11 * SECOND)) == 0
    assert len(warm(pop, 0, [112.0], now_ns=12 * SECOND)) == 1


def test_prepare_does_not_touch_state_and_a_dropped_batch_is_harmless():
    pop = EmaCross(6, [0, 1], {"fast": [3, 4], "slow": [10, 12]}, seed=2)
    warm(pop, 0, np.linspace(100, 105, 30))
    before = pop.snapshot()
    batch = ticks([0, 1, 0], [1.0, 2.0, 3.0], recv_ns=77)
    prepared = pop.prepare(batch)
    batch["bid"] = -1.0  # the writer laps the view after prepare: the copy is unaffected
    after = pop.snapshot()
    assert before.keys() == after.keys()
    assert all(
        np.array_equal(before[k], after[k], equal_nan=before[k].dtype.kind == "f") for k in before
    )
    assert list(prepared.recv_ns) == [77, 78, 79] and len(prepared) == 3
    pop.step(prepared, 0)
    assert pop.ema_fast[0] != before["F"][3][0]


def test_set_positions_snapshot_and_restore():
    params = {"fast": [3, 5], "slow": [10, 14], "qty": [1.0, 2.0]}
    pop = EmaCross(8, [0, 1], params, seed=5)
    warm(pop, 0, np.linspace(100, 110, 30))
    pop.set_positions(np.arange(8.0))
    assert list(pop.position) == list(range(8)) and not pop.pending.any()
    snap = pop.snapshot()

    twin = EmaCross(8, [0, 1], params, seed=5)
    twin.restore(snap)
    batch = ticks([0] * 5 + [1] * 20, np.r_[np.linspace(110, 90, 5), np.linspace(50, 60, 20)])
    a, b = pop.step(pop.prepare(batch), 0), twin.step(twin.prepare(batch), 0)
    assert np.array_equal(a.agent, b.agent) and np.array_equal(a.qty, b.qty)

    with pytest.raises(ValueError, match="different fast"):
        EmaCross(8, [0, 1], params, seed=6).restore(snap)
    with pytest.raises(ValueError, match="positions"):
        pop.set_positions(np.zeros(3))


def test_intents_write_records_every_field_but_seq():
    pop = EmaCross(2, [4], {"fast": [3, 3], "slow": [10, 10], "qty": 0.1}, seed=0)
    intents = warm(pop, 4, np.linspace(100, 90, 20))
    out = np.full(3, 0xFF, dtype=np.uint8).repeat(64).view(INTENT)
    out["seq"] = 99
    intents.write(out, population=3, host=1, created_ns=123)
    rec = out[:2]
    assert list(rec["agent"]) == [0, 1] and (rec["side"] == Side.SELL).all()
    assert (rec["qty"] == 0.1).all() and (rec["symbol"] == 4).all()
    assert (rec["population"] == 3).all() and (rec["host"] == 1).all()
    assert (rec["created_ns"] == 123).all() and (rec["tick_ns"] == intents.tick_ns).all()
    assert (rec.view(np.uint8).reshape(2, 64)[:, 52:] == 0).all()  # reserved bytes
    assert (rec["seq"] == 99).all()
    assert out[2]["agent"] == 0xFFFFFFFF  # untouched


def test_params_are_validated_and_registry():
    assert POPULATIONS["ema_cross"] is EmaCross
    with pytest.raises(ValueError, match=r"unknown population kind 'nope'.*ema_cross"):
        make_population("nope", 1, [0], {}, 0)
    with pytest.raises(ValidationError, match="qty lists 1 quantities"):
        make_population("ema_cross", 4, [0, 1], {"qty": [1.0]}, 0)
    with pytest.raises(ValidationError, match="below slow"):
        make_population("ema_cross", 4, [0], {"fast": [5, 60], "slow": [50, 60]}, 0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        make_population("ema_cross", 4, [0], {"colour": "red"}, 0)
    with pytest.raises(ValueError, match="distinct"):
        make_population("ema_cross", 4, [0, 0], {}, 0)


def test_cooldown_holds_an_agent_after_a_fill():
    from appliance.agents.base import PopulationParams

    assert PopulationParams(cooldown_s=0.5).cooldown_s == 0.5
    pop = EmaCross(
        2,
        [0],
        {"fast": (2, 2), "slow": (5, 5), "qty": 1.0, "warmup": 0, "cooldown_s": 10.0},
        seed=1,
    )
    ticks = np.zeros(4, TICK)
    ticks["bid"], ticks["ask"] = [100, 101, 102, 103], [100.5, 101.5, 102.5, 103.5]
    now = 1_000_000_000
    sent = pop.step(pop.prepare(ticks), now)
    assert len(sent) == 2
    reports = np.zeros(2, REPORT)
    reports["agent"] = sent.agent
    reports["kind"], reports["final"], reports["ts_ns"] = ReportKind.FILL, 1, now
    reports["side"], reports["fill_qty"] = sent.side, sent.qty
    pop.on_reports(reports)
    falling = ticks.copy()
    falling["bid"], falling["ask"] = [90, 80, 70, 60], [90.5, 80.5, 70.5, 60.5]
    assert len(pop.step(pop.prepare(falling), now + 1_000_000_000)) == 0, "still holding"
    assert len(pop.step(pop.prepare(falling), now + 11_000_000_000)) == 2, "hold over"

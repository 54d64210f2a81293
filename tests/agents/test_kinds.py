"""Each built-in kind's signals on hand-computed inputs (one tick per batch)."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.agents import make_population, population_class
from appliance.model.records import OrderType, ReportKind, Side
from tests.agents.conftest import make_report, make_ticks


def targets(pop, mids):
    out = []
    for k, m in enumerate(mids):
        pop.step(pop.prepare(make_ticks([0], [m], recv_ns=100 + k)), 0)
        out.append(float(pop.target[0]))
    return out


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_ema_cross(backend):
    # fast 1: the mid itself; slow 3 (a = 0.5): 10, 11, 11, 10.
    pop = make_population(
        "ema_cross", 1, [0], {"fast": 1, "slow": 3, "warmup": 0, "qty": 2.0}, 0, backend
    )
    assert targets(pop, [10, 12, 11, 9]) == [0.0, 2.0, 0.0, -2.0]
    assert pop.counters["signals"] == 4


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_mean_reversion(backend):
    # lookback 3 (a = 0.5): mean/var 10/0, 11/1, 10.5/0.75, 15.25/22.9375. z at tick 2:
    # -1 (enter long), tick 3: 9.5/sqrt(0.75) (reverse short), tick 4: -0.25/sqrt(22.9375)
    # (back within exit: flat). Warm from the third tick.
    params = {"lookback": 3, "entry": 1.0, "exit": 0.5, "qty": 1.0}
    pop = make_population("mean_reversion", 1, [0], params, 0, backend)
    t = targets(pop, [10, 12, 10, 20, 15])
    assert np.isnan(t[0]) and np.isnan(t[1])
    assert t[2:] == [1.0, -1.0, 0.0]
    assert pop.mean[0] == 15.125 and pop.var[0] == pytest.approx(0.5 * (22.9375 + 0.25 * 0.125))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_breakout(backend):
    # window 2: no channel for two ticks; 12 > max(10, 11); 11 inside [11, 12]; 9 < 11.
    pop = make_population("breakout", 1, [0], {"window": 2, "qty": 1.0}, 0, backend)
    t = targets(pop, [10, 11, 12, 11, 9])
    assert np.isnan(t[0]) and np.isnan(t[1])
    assert t[2:] == [1.0, 1.0, -1.0]
    assert pop.counters["signals"] == 2


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_market_making_quotes_requotes_and_skews(backend):
    params = {"half_spread_bps": 10.0, "skew_bps": 20.0, "requote_bps": 5.0, "qty": 1.0,
              "max_inventory": 2.0, "tick_size": 0.01}  # fmt: skip
    pop = make_population("market_making", 1, [0], params, 0, backend)
    step = lambda mid, k=0: pop.step(pop.prepare(make_ticks([0], [mid], recv_ns=k)), 0)  # noqa: E731
    out = step(100.0, 5)
    # Bid at floor(100 * 0.999 / 0.01) ticks, ask at ceil(100 * 1.001 / 0.01).
    assert list(out.side) == [Side.BUY, Side.SELL]
    assert (out.order_type == OrderType.LIMIT).all() and list(out.qty) == [1.0, 1.0]
    assert out.limit_price == pytest.approx([99.9, 100.1]) and list(out.tick_ns) == [5, 5]
    assert len(step(100.02)) == 0  # sent, not acked: nothing to do
    pop.on_reports(
        np.concatenate([make_report(0, ReportKind.ACK, s, final=False) for s in (1, -1)])
    )
    assert len(step(100.04)) == 0  # moved 4 bps: within the requote threshold
    out = step(100.06)  # 6 bps: cancel both
    assert list(out.order_type) == [OrderType.CANCEL] * 2 and list(out.qty) == [0.0, 0.0]
    # The bid filled before the cancel landed; the ask's cancel is confirmed.
    pop.on_reports(np.concatenate([make_report(0, ReportKind.FILL, 1, 1.0),
                                   make_report(0, ReportKind.ACK, 1, final=True),
                                   make_report(0, ReportKind.CANCEL, -1)]))  # fmt: skip
    assert pop.position[0] == 1.0 and pop.settled().all()
    out = step(100.0)
    # Long 1 of 2: reservation 100 * (1 - 0.002 * 0.5) = 99.9: bid 99.8001 -> 99.80, ask
    # 99.9999 -> 100.00.
    assert out.limit_price == pytest.approx([99.80, 100.0])
    pop.on_reports(make_report(0, ReportKind.FILL, 1, 1.0))  # bid filled: at max inventory
    out = step(100.0)
    assert len(out) == 0  # no bid allowed at +2; the ask still rests


def test_market_making_restart_cancels_first_and_rejected_cancel_keeps_quote():
    pop = make_population("market_making", 1, [0], {"qty": 1.0}, 0, "numba")
    pop.set_positions(np.array([1.0]))
    out = pop.step(pop.prepare(make_ticks([0], [100.0])), 0)
    assert list(out.order_type) == [OrderType.CANCEL] * 2
    pop.on_reports(make_report(0, ReportKind.REJECT, 1, reason=6, ts_ns=0))
    assert pop.state_bid[0] == 2 and pop.counters["rejects_bad_order"] == 1


def test_grid_gives_one_agent_per_combination_and_symbol():
    grid = {"fast": [5, 10, 20], "slow": [50, 100, 200]}
    pop = make_population("ema_cross", 18, [0, 1], {}, 0, "numpy", grid)
    assert list(pop.fast_period[:9]) == [5, 5, 5, 10, 10, 10, 20, 20, 20]
    assert list(pop.slow_period[:9]) == [50, 100, 200] * 3
    assert np.array_equal(pop.fast_period[9:], pop.fast_period[:9])
    with pytest.raises(ValueError, match="each symbol needs a multiple of 9"):
        make_population("ema_cross", 10, [0, 1], {}, 0, "numpy", grid)
    with pytest.raises(ValueError, match="'speed' is not a per-agent parameter"):
        make_population("ema_cross", 2, [0], {}, 0, "numpy", {"speed": [1, 2]})
    with pytest.raises(ValueError, match="fast < slow: agent 1"):
        make_population("ema_cross", 2, [0], {}, 0, "numpy", {"fast": [5, 60], "slow": [50]})


def test_explicit_values_and_ranges():
    pop = make_population(
        "mean_reversion", 4, [0, 1], {"entry": {"values": [1.5, 3.0]}, "lookback": [10, 12]}, 7
    )
    assert list(pop.entry) == [1.5, 3.0, 1.5, 3.0]
    assert set(pop.table["lookback"]) <= {10, 11, 12}
    with pytest.raises(ValueError, match="3 values, expected one per agent"):
        make_population("mean_reversion", 4, [0, 1], {"entry": {"values": [1, 2, 3]}}, 7)


def test_user_population_by_import_path():
    cls = population_class("examples.populations:Rsi")
    assert cls.kind == "rsi"
    pop = make_population("examples.populations:Rsi", 2, [0], {"period": 2, "qty": 1.0}, 0)
    out = pop.step(pop.prepare(make_ticks([0] * 4, [10, 11, 12, 13])), 0)
    assert list(out.side) == [Side.SELL, Side.SELL]  # overbought after a straight rise
    for bad, msg in [
        ("examples.nowhere:Rsi", "does not import"),
        ("examples.populations:Nope", "has no 'Nope'"),
        ("examples.populations:np", "not a subclass"),
        ("examples/populations", "unknown population kind"),
    ]:
        with pytest.raises(ValueError, match=msg):
            population_class(bad)

"""Metrics on a hand-computed example (the numbers in the comments are worked by hand)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.model.instruments import Instrument
from appliance.model.records import INTENT, REPORT, TICK, RejectReason, ReportKind, TickKind
from appliance.model.universe import AgentLayout, PopulationSlot, Universe
from appliance.trading.metrics import TradingMetrics

S = 1_000_000_000
PPY = 365 * 86_400  # periods per year at a 1 s interval


def quote(t_s: float, bid: float, ask: float, symbol: int = 0) -> np.ndarray:
    t = np.zeros(1, TICK)
    t["recv_ns"] = t["ts_ns"] = round(t_s * S)
    t["bid"], t["ask"], t["symbol"], t["kind"] = bid, ask, symbol, TickKind.QUOTE
    return t


def intent(seq: int, agent: int, side: int, qty: float, symbol: int = 0) -> np.ndarray:
    r = np.zeros(1, INTENT)
    r["seq"], r["agent"], r["side"], r["qty"], r["symbol"] = seq, agent, side, qty, symbol
    return r


def report(seq, agent, kind, side=1, qty=0.0, price=0.0, fee=0.0, reason=0, final=1, symbol=0):
    r = np.zeros(1, REPORT)
    r["intent_seq"], r["agent"], r["kind"], r["side"] = seq, agent, kind, side
    r["fill_qty"], r["fill_price"], r["fee"], r["reason"] = qty, price, fee, reason
    r["final"], r["symbol"] = final, symbol
    return {0: r}


@pytest.fixture
def layout() -> Universe:
    pops = [PopulationSlot(0, 0, 2, "host-a", "ema_cross", horizon_s=2.0)]
    return Universe([Instrument("X/USDT", 1.0)], AgentLayout(pops))


def scenario(m: TradingMetrics) -> None:
    m.on_ticks(quote(0.0, 99, 101))  # mid 100; curves start at t = 0
    m.on_intents(np.concatenate([intent(0, 0, +1, 2), intent(1, 1, -1, 1)]))
    m.on_reports(report(0, 0, ReportKind.FILL, +1, 2, 101, 0.2))  # long 2 @ 101
    m.on_reports(report(1, 1, ReportKind.REJECT, -1, reason=RejectReason.MAX_POSITION))
    m.on_ticks(quote(1.0, 101, 103))  # sample at 1 s, marked at 100: 2 * (100 - 101) - 0.2
    m.on_ticks(quote(2.5, 103, 105))  # sample at 2 s, marked at 102: +1.8; signals due at 2 s
    m.on_intents(intent(2, 0, -1, 2))  # at 2.5 s, mid 104
    m.on_reports(report(2, 0, ReportKind.FILL, -1, 2, 103, 0.2))  # flat: realised 4, fees 0.4
    m.on_ticks(quote(5.2, 99, 101))  # 3 boundaries (3, 4, 5 s): equity 3.6, then 0, 0
    m.on_ticks(quote(6.0, 99, 101))  # boundary 6 s: 0 again


def test_hand_computed_agent(layout):
    m = TradingMetrics(layout, sample_interval_s=1.0)
    scenario(m)
    a = m.figures("agent")
    # Agent 0: returns of the 1 s equity curve: -2.2, 4.0, 1.8, 0, 0, 0.
    r = np.array([-2.2, 4.0, 1.8, 0, 0, 0])
    assert a["samples"][0] == 6
    assert a["realized"][0] == pytest.approx(4.0)
    assert a["fees"][0] == pytest.approx(0.4)
    assert a["unrealized"][0] == 0.0 and a["position"][0] == 0.0
    assert a["net"][0] == pytest.approx(3.6) and a["gross"][0] == pytest.approx(4.0)
    assert a["turnover"][0] == pytest.approx(2 * 101 + 2 * 103)
    sharpe = 0.6 / math.sqrt((24.08 - 6 * 0.36) / 5) * math.sqrt(PPY)
    assert sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(PPY))
    assert a["sharpe"][0] == pytest.approx(sharpe)
    assert a["sortino"][0] == pytest.approx(0.6 / math.sqrt(4.84 / 6) * math.sqrt(PPY))
    assert a["max_drawdown"][0] == pytest.approx(2.2)
    assert a["drawdown_s"][0] == pytest.approx(1.0)  # under water from 0 s to 1 s
    assert a["orders"][0] == 2 and a["orders_filled"][0] == 2
    assert a["fill_rate_qty"][0] == pytest.approx(1.0)
    assert a["fill_rate_orders"][0] == pytest.approx(1.0)
    # Its buy at 100 met 104 two seconds later; its sell at 104 met 100: both right.
    assert a["signal_accuracy"][0] == pytest.approx(1.0)
    # Agent 1: one rejected sell (its signal at 100 met 104: wrong); no PnL, no curve.
    assert a["orders"][1] == 1 and a["orders_filled"][1] == 0
    assert a["rejects_max_position"][1] == 1 and a["reject_rate"][1] == pytest.approx(1.0)
    assert a["fill_rate_qty"][1] == 0.0 and a["signal_accuracy"][1] == 0.0
    assert math.isnan(a["sharpe"][1]) and a["max_drawdown"][1] == 0.0


def test_hand_computed_groups(layout):
    m = TradingMetrics(layout, sample_interval_s=1.0)
    scenario(m)
    for by in ("population", "symbol", "overall"):
        g = m.figures(by)
        assert g["net"][0] == pytest.approx(3.6) and g["fees"][0] == pytest.approx(0.4)
        assert g["orders"][0] == 3 and g["orders_filled"][0] == 2
        assert g["fill_rate_orders"][0] == pytest.approx(2 / 3)
        # requested notional at the reference mid: 2*100 + 1*100 + 2*104; filled 2*100 + 2*104
        assert g["fill_rate_qty"][0] == pytest.approx(408 / 508)
        assert g["reject_rate"][0] == pytest.approx(1 / 3)
        assert g["signal_accuracy"][0] == pytest.approx(2 / 3)
        assert g["max_drawdown"][0] == pytest.approx(2.2)
        assert g["sharpe"][0] == pytest.approx(m.figures("agent")["sharpe"][0])
    assert math.isnan(m.figures("population")["position"][0])
    assert m.figures("symbol")["position"][0] == 0.0


def test_open_position_is_marked_at_the_mid(layout):
    m = TradingMetrics(layout)
    m.on_ticks(quote(0.0, 99, 101))
    m.on_intents(intent(0, 0, +1, 3))
    # IOC: 2 of 3 filled, the rest cancelled.
    m.on_reports(report(0, 0, ReportKind.FILL, +1, 2, 101, 0.1, final=0))
    m.on_reports(report(0, 0, ReportKind.CANCEL, +1))
    m.on_ticks(quote(0.5, 104, 106))
    a = m.figures("agent")
    assert a["position"][0] == 2.0 and a["exposure"][0] == pytest.approx(210.0)
    assert a["unrealized"][0] == pytest.approx(2 * (105 - 101))
    assert a["net"][0] == pytest.approx(8 - 0.1)
    assert a["fill_rate_qty"][0] == pytest.approx(2 / 3)
    assert a["orders_filled"][0] == 1  # traded at all


def test_redelivered_intents_count_once(layout):
    m = TradingMetrics(layout)
    m.on_ticks(quote(0.0, 99, 101))
    batch = np.concatenate([intent(0, 0, +1, 1), intent(1, 1, +1, 1)])
    m.on_intents(batch)
    m.on_intents(batch)  # a queue re-delivering after a restart
    assert m.figures("overall")["orders"][0] == 2


def test_checkpoint_continues_identically(layout):
    whole = TradingMetrics(layout)
    scenario(whole)
    half = TradingMetrics(layout)
    half.on_ticks(quote(0.0, 99, 101))
    half.on_intents(np.concatenate([intent(0, 0, +1, 2), intent(1, 1, -1, 1)]))
    half.on_reports(report(0, 0, ReportKind.FILL, +1, 2, 101, 0.2))
    resumed = TradingMetrics(layout)
    resumed.load(half.state())
    resumed.on_reports(report(1, 1, ReportKind.REJECT, -1, reason=RejectReason.MAX_POSITION))
    for t, b, a in ((1.0, 101, 103), (2.5, 103, 105)):
        resumed.on_ticks(quote(t, b, a))
    resumed.on_intents(intent(2, 0, -1, 2))
    resumed.on_reports(report(2, 0, ReportKind.FILL, -1, 2, 103, 0.2))
    resumed.on_ticks(quote(5.2, 99, 101))
    resumed.on_ticks(quote(6.0, 99, 101))
    for by in ("agent", "overall"):
        want, got = whole.figures(by), resumed.figures(by)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_unknown_agents_are_counted_not_fatal(layout):
    m = TradingMetrics(layout)
    m.on_ticks(quote(0.0, 99, 101))
    m.on_intents(intent(0, 7, +1, 1))  # agent 7 of a 2-agent population
    assert m.ignored == 1 and m.figures("overall")["orders"][0] == 0


def test_cancels_are_neither_orders_nor_signals(layout):
    from appliance.model.records import OrderType

    m = TradingMetrics(layout, sample_interval_s=1.0)
    m.on_ticks(quote(0.0, 99, 101))
    cancel = intent(0, 0, +1, 0.0)
    cancel["order_type"] = OrderType.CANCEL
    m.on_intents(np.concatenate([cancel, intent(1, 0, +1, 1)]))
    m.on_reports(report(0, 0, ReportKind.ACK, +1))  # the cancel's final ACK
    m.on_ticks(quote(3.0, 99, 101))  # past the horizon: the signals are scored
    a = m.figures("agent")
    assert a["orders"][0] == 1 and a["orders_filled"][0] == 0
    assert a["signals_correct"][0] + a["signals_wrong"][0] + a["signals_flat"][0] == 1
    m.on_intents(intent(0, 0, -1, 1))  # seq 0 was counted (as a cancel): not new
    assert m.figures("agent")["orders"][0] == 1

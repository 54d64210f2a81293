"""Flattening in the engine: closing orders under the operator's identity, within limits."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.model.enums import TradingState
from appliance.model.records import RejectReason, ReportKind, Side
from appliance.trading.flatten import FLATTEN_SEQ, closing_intents, flatten_round
from appliance.trading.risk import RiskLimits


def test_flatten_closes_every_position_in_pieces_within_the_notional_limit(make_engine, intents):
    e = make_engine()
    e.process(intents([
        {"seq": 0, "agent": 0, "qty": 0.5},  # long 0.5 BTC at ~101
        {"seq": 1, "agent": 1, "side": Side.SELL, "qty": 0.2},
        {"seq": 2, "agent": 2, "symbol": 1, "qty": 3.0},
    ]))  # fmt: skip
    assert len(e.positions()) == 3
    e.risk.set_limits({**{s: e.risk.limits(s) for s in e.symbols},
                       "BTC/USD": RiskLimits(10.0, 21.0)})  # fmt: skip
    planned = closing_intents(e, 1)
    assert (planned["seq"] >= FLATTEN_SEQ).all()
    btc = planned[planned["symbol"] == 0]
    assert (btc["qty"] * 101.0 <= 21.0).all() and len(btc) > 2  # in pieces

    done = flatten_round(e, "operator alice (uid 1000, pid 7)")
    assert done.open_after == 0 and e.positions() == {}
    # the closing fills come back for the metrics: every closed quantity, per agent
    fills = np.concatenate(list(done.closing_reports.values()))
    fills = fills[fills["kind"] == ReportKind.FILL]
    closed = {(int(f["agent"]), int(f["symbol"])): 0.0 for f in fills}
    for f in fills:
        closed[int(f["agent"]), int(f["symbol"])] += float(f["fill_qty"])
    assert closed == pytest.approx({(0, 0): 0.5, (1, 0): 0.2, (2, 1): 3.0})
    assert e.risk.state is TradingState.REDUCE_ONLY
    assert e.journal.trading_states()[-1].who == "operator alice (uid 1000, pid 7)"
    # agents' own intents still go through, and only what reduces passes
    rep = e.process(intents([{"seq": 3, "agent": 0, "qty": 0.1}]))
    assert int(rep[0]["reason"][0]) == RejectReason.REDUCE_ONLY
    assert e.journal.reads.journaled_seqs(e.journal.epoch, 0, [3]) == {3}
    e.close()

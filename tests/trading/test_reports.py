"""Reports: rows in event order, one REPORT array per host."""

from appliance.model.orders import IntentOrder, OrderState
from appliance.model.records import RejectReason, ReportKind
from appliance.trading.reports import Reports


def test_reports_per_host_in_event_order_with_final_flags():
    r = Reports()
    assert r.build(1) == {}
    a = IntentOrder("a", host=2, intent_seq=7, agent=3, symbol=1, side=1, qty_lots=2, lot=0.5)
    b = IntentOrder("b", host=0, intent_seq=4, side=-1)
    r.add(a, ReportKind.ACK)
    a.advance(OrderState.ACCEPTED)
    a.advance(OrderState.FILLED)
    r.add(a, ReportKind.FILL, 1.0, 100.0, 0.1)
    b.advance(OrderState.REJECTED)
    r.add(b, ReportKind.REJECT, reason=RejectReason.HALTED)
    out = r.build(99)
    assert sorted(out) == [0, 2]
    assert out[2]["kind"].tolist() == [ReportKind.ACK, ReportKind.FILL]
    assert out[2]["final"].tolist() == [0, 1] and out[2]["fill_price"].tolist() == [0.0, 100.0]
    assert (out[2]["intent_seq"] == 7).all() and (out[2]["agent"] == 3).all()
    assert out[0]["reason"].tolist() == [RejectReason.HALTED] and out[0]["side"][0] == -1
    assert (out[0]["ts_ns"] == 99).all() and out[0]["final"][0] == 1

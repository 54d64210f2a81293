"""A market-making population trades end to end through `dynamind run` (paper venue):
its quotes rest, fill when the market trades through them, are cancelled and replaced when
the mid moves, and every intent is accounted for in the journal."""

from __future__ import annotations

from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason
from tests.harness import (
    assert_hosts_agree,
    assert_intents_accounted,
    assert_positions_equal_fills,
)


def test_market_makers_quote_fill_and_requote_end_to_end(mm_app):
    app = mm_app
    app.start("--duration", "6")
    assert app.proc.wait(180) == 0, app.log_tail()
    assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert_positions_equal_fills(app)
    with app.journal() as db:
        mm = "host = 1 AND population = 1"
        kinds = dict(db.execute(
            f"SELECT order_type, count(*) FROM orders WHERE {mm} GROUP BY order_type"
        ).fetchall())  # fmt: skip
        assert set(kinds) == {OrderType.LIMIT, OrderType.CANCEL}, kinds
        # quotes rested at the venue and filled when the market traded through them
        (maker,) = db.execute(
            "SELECT count(*) FROM venue_fills f JOIN venue_orders v "
            "ON v.client_order_id = f.venue_order_id WHERE f.maker = 1 AND v.order_type = ?",
            (OrderType.LIMIT,),
        ).fetchone()
        assert maker > 0
        # cancel/replace: cancels carried out, quotes withdrawn by them, and new quotes
        # from the same agent and side after a cancel
        states = dict(db.execute(
            f"SELECT state, count(*) FROM orders WHERE {mm} AND order_type = ? GROUP BY state",
            (OrderType.CANCEL,),
        ).fetchall())  # fmt: skip
        assert set(states) == {OrderState.DONE}, states
        (withdrawn,) = db.execute(
            f"SELECT count(*) FROM orders WHERE {mm} AND state = ? AND reason_text LIKE "
            "'cancelled by the agent%'",
            (OrderState.CANCELED,),
        ).fetchone()
        assert withdrawn > 0
        (replaced,) = db.execute(
            "SELECT count(*) FROM orders c JOIN orders q ON q.host = c.host AND "
            "q.population = c.population AND q.agent = c.agent AND q.side = c.side AND "
            "q.symbol = c.symbol AND q.intent_seq > c.intent_seq AND q.order_type = ? "
            "WHERE c.order_type = ? AND c.host = 1 AND c.population = 1",
            (OrderType.LIMIT, OrderType.CANCEL),
        ).fetchone()
        assert replaced > 0
        (bad,) = db.execute(
            "SELECT count(*) FROM orders WHERE reason IN (?, ?)",
            (RejectReason.BAD_ORDER, RejectReason.UNKNOWN_SYMBOL),
        ).fetchone()
        assert bad == 0

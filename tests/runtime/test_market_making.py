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

MM = "host = 1 AND population = 1"  # the market makers: host-b's second population


def market_making(app) -> dict[str, int]:
    """What the journal shows of the market makers so far."""
    with app.journal() as db:

        def one(sql: str, *args) -> int:
            return db.execute(sql, args).fetchone()[0]

        return {
            # quotes that rested at the venue and filled when the market traded through
            "maker_fills": one(
                "SELECT count(*) FROM venue_fills f JOIN venue_orders v ON "
                "v.client_order_id = f.venue_order_id WHERE f.maker = 1 AND v.order_type = ?",
                OrderType.LIMIT,
            ),
            "cancels_done": one(
                f"SELECT count(*) FROM orders WHERE {MM} AND order_type = ? AND state = ?",
                OrderType.CANCEL,
                OrderState.DONE,
            ),
            "cancels_open_or_refused": one(
                f"SELECT count(*) FROM orders WHERE {MM} AND order_type = ? AND state != ?",
                OrderType.CANCEL,
                OrderState.DONE,
            ),
            "quotes_withdrawn": one(
                f"SELECT count(*) FROM orders WHERE {MM} AND state = ? AND reason_text LIKE "
                "'cancelled by the agent%'",
                OrderState.CANCELED,
            ),
            # a quote of the same agent and side after one of its cancels: a replace
            "replaced": one(
                "SELECT count(*) FROM orders c JOIN orders q ON q.host = c.host AND "
                "q.population = c.population AND q.agent = c.agent AND q.side = c.side AND "
                "q.symbol = c.symbol AND q.intent_seq > c.intent_seq AND q.order_type = ? "
                "WHERE c.order_type = ? AND c.host = 1 AND c.population = 1",
                OrderType.LIMIT,
                OrderType.CANCEL,
            ),
            "malformed": one(
                "SELECT count(*) FROM orders WHERE reason IN (?, ?)",
                RejectReason.BAD_ORDER,
                RejectReason.UNKNOWN_SYMBOL,
            ),
        }


def test_market_makers_quote_fill_and_requote_end_to_end(mm_app):
    app = mm_app
    app.start().wait_ready()
    wanted = ("maker_fills", "cancels_done", "quotes_withdrawn", "replaced")
    app.wait_for(lambda: all(market_making(app)[k] > 0 for k in wanted), 120, "quote cycles")
    assert app.stop() == 0, app.log_tail()
    assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert_positions_equal_fills(app)
    seen = market_making(app)
    assert seen["cancels_open_or_refused"] == 0 and seen["malformed"] == 0, seen

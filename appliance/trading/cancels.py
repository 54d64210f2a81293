"""Carrying out CANCEL intents (see records.OrderType.CANCEL).

A CANCEL intent of an agent withdraws the unfilled rest of that agent's open LIMIT intents
on its symbol and side that came before it (lower seq; any intent of an earlier run came
before, whatever its seq: the queues of a new appliance lifetime count from 0 again, and
the quotes of the last one may still rest): each one's venue order is
cancelled at the venue, keeping what filled, and the intent ends with its CANCEL report.
The cancel intent itself then ends DONE with one ACK (final), also when nothing was left
to cancel. When the venue cannot be asked (its cancel raised), the cancel intent is
rejected (VENUE) and the orders stay as they are: the agent knows its quote still rests.
"""

from __future__ import annotations

import dataclasses
import logging

from appliance.model.orders import IntentOrder, OrderState
from appliance.model.records import OrderType, RejectReason
from appliance.trading.batch import Batch
from appliance.trading.journal import Journal
from appliance.trading.open_orders import OpenOrders
from appliance.venues.base import Venue

log = logging.getLogger(__name__)


def targets(book: OpenOrders, cancel: IntentOrder) -> list[IntentOrder]:
    """The open LIMIT intents that ``cancel`` withdraws."""
    when = (Journal.intent_run(cancel.client_order_id), cancel.intent_seq)
    return [
        o
        for o in book.agent_intents(cancel.key)
        if o.order_type == OrderType.LIMIT
        and o.side == cancel.side
        and (Journal.intent_run(o.client_order_id), o.intent_seq) < when
        and not o.is_terminal
    ]


def carry_out(cancels: list[IntentOrder], book: OpenOrders, venue: Venue, b: Batch) -> None:
    """Carry out ``cancels`` (open CANCEL intent orders) in order, into ``b``."""
    for c in cancels:
        text = f"cancelled by the agent (cancel intent {c.client_order_id})"
        done, failed = 0, []
        for o in targets(book, c):
            for vo in book.carriers(o):
                try:
                    status = venue.cancel(vo.client_order_id)
                except Exception as exc:
                    log.exception("cancel of %s failed", vo.client_order_id)
                    failed.append(f"{vo.client_order_id}: {type(exc).__name__}: {exc}")
                    continue
                if status is None:  # never reached the venue: in-doubt handling settles it
                    continue
                if status.state == OrderState.CANCELED:
                    status = dataclasses.replace(
                        status, reason=RejectReason.REQUESTED, reason_text=text
                    )
                b.apply_status(vo, status)
            done += o.is_terminal
        if failed:
            b.void(c, RejectReason.VENUE, "venue cancel failed: " + "; ".join(failed))
        else:
            b.done(c, f"{done} order(s) withdrawn")

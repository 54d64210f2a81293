"""What a change of the trading state does, and the drawdown kill switch that makes one.

Entering halted or reduce-only cancels every resting venue order; going back to active
re-arms the drawdown peak. ``TradingControl`` (control.py) holds and journals the state.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

from appliance.model.enums import TradingState
from appliance.model.orders import OrderState
from appliance.model.records import RejectReason
from appliance.trading.account import AccountGuard
from appliance.trading.batch import Batch
from appliance.trading.control import TradingControl
from appliance.trading.open_orders import OpenOrders
from appliance.trading.portfolio import Portfolio
from appliance.venues.base import QuoteBook, Venue

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TradingSwitch:
    """Changes the trading state through ``control`` and carries out what the change means
    for the orders resting at ``venue``."""

    control: TradingControl
    account: AccountGuard
    portfolio: Portfolio
    quotes: QuoteBook
    book: OpenOrders
    venue: Venue

    def change(self, state: TradingState, who: str, why: str, b: Batch) -> None:
        if not self.control.set(state, who, why):
            return
        log.warning("trading %s: %s (%s)", state.value, why, who)
        if state is TradingState.ACTIVE:
            self.account.rearm()
        else:
            self.cancel_resting(b, f"cancelled: trading {state.value} ({why})")

    def cancel_resting(self, b: Batch, text: str) -> None:
        """Cancel every resting venue order; their ends give the trading state as why."""
        reason = {
            TradingState.HALTED: RejectReason.HALTED,
            TradingState.REDUCE_ONLY: RejectReason.REDUCE_ONLY,
        }.get(self.control.state, RejectReason.REQUESTED)
        for vo in list(self.book.venue_orders.values()):
            status = self.venue.cancel(vo.client_order_id)
            if status is not None and status.state == OrderState.CANCELED:
                status = dataclasses.replace(status, reason=reason, reason_text=text)
            if status is not None:
                b.apply_status(vo, status)

    def kill_switch(self, b: Batch) -> None:
        """Trip the drawdown kill switch when the account's net PnL fell far enough."""
        guard = self.account
        action = guard.limits.drawdown_action
        if not math.isfinite(guard.limits.max_drawdown) or self.control.state in (
            action,
            TradingState.HALTED,
        ):
            return
        pnl = self.portfolio.account(self.quotes.mid)
        net = pnl.realized + pnl.unrealized - pnl.fees
        fall = guard.drawdown(net)
        if fall is not None:
            why = (
                f"drawdown kill switch at {time.strftime('%H:%M:%S')}: net PnL {net:,.2f} is "
                f"{fall:,.2f} below its peak (max_drawdown {guard.limits.max_drawdown:,.2f})"
            )
            self.change(action, "drawdown kill switch", why, b)

"""The supervisor's status figures: rates over the segments and execution's figures (the
status line and board are written by service.py).

Scopes, so that no line mixes them: rates, ``fills`` and ``rejects`` count since this start
of the appliance (the execution process's stats counters, which survive its restarts and
leave out what a start recovers from the journal, archive carries included); PnL and fees
are those of the positions held, the whole journal's (docs/metrics.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from appliance.config import Config
from appliance.model.enums import Role
from appliance.runtime.children import Child
from appliance.runtime.segments import SegmentSet
from appliance.runtime.service import pnl_net
from appliance.trading.engine import EngineStatus

log = logging.getLogger(__name__)


class StatusReporter:
    """Turns counters into rates between two calls, with execution's last figures."""

    def __init__(self, segments: SegmentSet) -> None:
        self.segments = segments
        # The counters start at 0 with the segments, made after this: the first rate is the
        # one since then (a figure, not a 0 that says nothing).
        self._born = time.monotonic()
        self._rates: dict[str, tuple[float, int]] = {}

    def _rate(self, key: str, value: int, now: float) -> float:
        prev = self._rates.get(key, (self._born, 0))
        self._rates[key] = (now, value)
        if now <= prev[0]:
            return 0.0
        return (value - prev[1]) / (now - prev[0])

    def _execution_counters(self) -> dict[str, int]:
        for slot in self.segments.stats.snapshot():
            if slot["name"] == Role.EXECUTION:
                return slot["counters"]
        return {}

    def status(
        self, children: Iterable[Child], last_status: dict[str, EngineStatus], config: Config
    ) -> dict[str, Any]:
        """The figures of a status line (see service.py), ``config`` the running one."""
        now = time.monotonic()
        ring = self.segments.ring
        ticks = ring.publish_cursor
        intents = sum(q.head for q, _ in self.segments.queues)
        # Before execution's first word: nothing traded, trading as the config says.
        ex = last_status.get(Role.EXECUTION) or EngineStatus(trading=config.trading.state)
        counted = self._execution_counters()
        return {
            "ticks": ticks,
            "ticks_per_s": self._rate("ticks", ticks, now),
            "intents": intents,
            "intents_per_s": self._rate("intents", intents, now),
            "fills": counted.get("fills", 0),
            "rejects": counted.get("rejects", 0),
            "realized_pnl": ex.realized,
            "unrealized_pnl": ex.unrealized,
            "fees": ex.fees,
            "pnl_net": pnl_net(ex.realized, ex.unrealized, ex.fees),
            "open_orders": ex.open_orders,
            "trading": ex.trading,
            "trading_why": ex.trading_why,  # who set it and why (journaled, or storage)
            "ring_lost": sum(r["lost"] for r in ring.readers()),
            "restarts": sum(c.incarnation - 1 for c in children),
        }

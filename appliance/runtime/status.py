"""The supervisor's status: rates over the segments and execution's figures, one line."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from appliance.model.enums import Role
from appliance.runtime.children import Child
from appliance.runtime.segments import SegmentSet

log = logging.getLogger(__name__)


class StatusReporter:
    """Turns counters into rates between two calls and formats the status line."""

    def __init__(self, segments: SegmentSet) -> None:
        self.segments = segments
        self._rates: dict[str, tuple[float, int]] = {}

    def _rate(self, key: str, value: int, now: float) -> float:
        prev = self._rates.get(key)
        self._rates[key] = (now, value)
        if prev is None or now <= prev[0]:
            return 0.0
        return (value - prev[1]) / (now - prev[0])

    def status(
        self, children: Iterable[Child], last_status: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        now = time.monotonic()
        ring = self.segments.ring
        ticks = ring.publish_cursor
        intents = sum(q.head for q, _ in self.segments.queues)
        ex = last_status.get(Role.EXECUTION, {})
        return {
            "ticks": ticks,
            "ticks_per_s": self._rate("ticks", ticks, now),
            "intents": intents,
            "intents_per_s": self._rate("intents", intents, now),
            "fills": ex.get("fills", 0),
            "rejects": sum(ex.get("rejects", {}).values()),
            "rejects_by_reason": ex.get("rejects", {}),
            "realized_pnl": ex.get("realized", 0.0),
            "unrealized_pnl": ex.get("unrealized", 0.0),
            "fees": ex.get("fees", 0.0),
            "trading": ex.get("trading", "?"),
            "ring_lost": sum(r["lost"] for r in ring.readers()),
            "restarts": sum(c.incarnation - 1 for c in children),
        }

    @staticmethod
    def line(s: dict[str, Any]) -> str:
        return (
            f"ticks/s={s['ticks_per_s']:,.0f} intents/s={s['intents_per_s']:,.0f} "
            f"fills={s['fills']:,} rejects={s['rejects']:,} "
            f"pnl={s['realized_pnl'] + s['unrealized_pnl']:,.2f} "
            f"(realised {s['realized_pnl']:,.2f}) ring_lost={s['ring_lost']:,} "
            f"restarts={s['restarts']}"
        )

"""The ``priority`` policy's conflict resolution: higher-priority populations set the side.

Per symbol it remembers the direction of the most recent intent of the highest priority
seen within ``window_ns`` before now. An intent of a lower priority on the other side
within that window is rejected (CONFLICT); any other intent passes, and an intent of
that priority or above becomes the symbol's direction for the next ``window_ns``. A batch
is judged in priority order (highest first, batch order within a priority), so the
outcome does not depend on how intents of one batch happen to be ordered across hosts.
Intents of equal priority never conflict: opposite ones cross as under ``net``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class _Lead:
    priority: int
    side: int
    until_ns: int


class PriorityWindow:
    def __init__(self, window_ns: int, priorities: Mapping[tuple[int, int], int]) -> None:
        self.window_ns = int(window_ns)
        self.priorities = dict(priorities)  # (host, population) -> priority; default 0
        self._lead: dict[int, _Lead] = {}  # symbol -> the direction that rules it

    def configure(self, window_ns: int, priorities: Mapping[tuple[int, int], int]) -> None:
        self.window_ns = int(window_ns)
        self.priorities = dict(priorities)

    def describe(self, symbol: int) -> str:
        lead = self._lead.get(symbol)
        if lead is None:
            return "no population leads"
        return (
            f"a priority {lead.priority} population is {'buying' if lead.side > 0 else 'selling'}"
        )

    def conflicts(
        self,
        host: np.ndarray,
        population: np.ndarray,
        symbol: np.ndarray,
        side: np.ndarray,
        idx: np.ndarray,
        now_ns: int,
    ) -> list[tuple[int, str]]:
        """The intents among ``idx`` that lose, with why: (index, text)."""
        prio = [
            self.priorities.get((h, p), 0)
            for h, p in zip(host[idx].tolist(), population[idx].tolist(), strict=True)
        ]
        order = sorted(range(len(idx)), key=lambda k: -prio[k])
        lost = []
        for k in order:
            i = int(idx[k])
            s, d, p = int(symbol[i]), int(side[i]), prio[k]
            lead = self._lead.get(s)
            if lead is not None and now_ns < lead.until_ns and p < lead.priority and d != lead.side:
                lost.append((i, f"CONFLICT: priority {p} < {self.describe(s)}"))
                continue
            if lead is None or now_ns >= lead.until_ns or p >= lead.priority:
                self._lead[s] = _Lead(p, d, now_ns + self.window_ns)
        return sorted(lost)

"""What agents are told: REPORT rows collected in event order, one array per host at the end."""

from __future__ import annotations

import numpy as np

from appliance.model.orders import IntentOrder
from appliance.model.records import REPORT, RejectReason, ReportKind

# REPORT fields filled from a row, in row order after the host.
_FIELDS = (
    "intent_seq", "fill_qty", "fill_price", "fee", "agent", "population", "symbol", "kind",
    "reason", "side", "final",
)  # fmt: skip


class Reports:
    """The reports of one engine call, in the order their events happened."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        o: IntentOrder,
        kind: ReportKind,
        qty: float = 0.0,
        price: float = 0.0,
        fee: float = 0.0,
        reason: int = RejectReason.NONE,
    ) -> None:
        # final: this report leaves the intent in a terminal state, so it is its last.
        # Plain ints: numpy converts a column of IntEnum members several times slower.
        self.rows.append(
            (o.host, o.intent_seq, qty, price, fee, o.agent, o.population, o.symbol, int(kind),
             int(reason), o.side, int(o.is_terminal))
        )  # fmt: skip

    def build(self, ts_ns: int) -> dict[int, np.ndarray]:
        """REPORT records per host, stamped ``ts_ns`` (seq is the report queue's to set)."""
        if not self.rows:
            return {}
        cols = list(zip(*self.rows, strict=True))
        out = np.zeros(len(self.rows), REPORT)
        for name, col in zip(_FIELDS, cols[1:], strict=True):
            out[name] = col
        out["ts_ns"] = ts_ns
        host = np.array(cols[0])
        return {int(h): out[host == h] for h in np.unique(host)}


def merge(*parts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Report arrays per host of several engine calls, in call order."""
    out: dict[int, list[np.ndarray]] = {}
    for part in parts:
        for host, rep in part.items():
            out.setdefault(host, []).append(rep)
    return {h: reps[0] if len(reps) == 1 else np.concatenate(reps) for h, reps in out.items()}

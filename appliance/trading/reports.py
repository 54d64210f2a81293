"""What agents are told: REPORT rows collected in event order, one array per host at the end."""

from __future__ import annotations

import numpy as np

from appliance.model.orders import IntentOrder
from appliance.model.records import REPORT, RejectReason, ReportKind

# A REPORT record as a tuple (numpy builds the array from a list of them in one C loop),
# with its host beside it. seq is the report queue's to set, ts_ns the build's.
_HOST = np.dtype([("host", "<u2"), ("report", REPORT)])


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
            (o.host, (0, o.intent_seq, 0, qty, price, fee, o.agent, o.population, o.symbol,
             int(kind), int(reason), o.side, int(o.is_terminal), b""))
        )  # fmt: skip

    def build(self, ts_ns: int) -> dict[int, np.ndarray]:
        """REPORT records per host, stamped ``ts_ns`` (seq is the report queue's to set)."""
        if not self.rows:
            return {}
        rows = np.array(self.rows, _HOST)
        out = rows["report"]
        out["ts_ns"] = ts_ns
        host = rows["host"]
        if (host == host[0]).all():
            return {int(host[0]): out.copy()}
        return {int(h): out[host == h] for h in np.unique(host)}


def merge(*parts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Report arrays per host of several engine calls, in call order."""
    out: dict[int, list[np.ndarray]] = {}
    for part in parts:
        for host, rep in part.items():
            out.setdefault(host, []).append(rep)
    return {h: reps[0] if len(reps) == 1 else np.concatenate(reps) for h, reps in out.items()}

"""The order book of one symbol as the replay moves it, with Binance's update ids.

The book starts at the capture's REST snapshot (``lastUpdateId`` L0) and applies the
capture's diff-depth events in order, skipping those the snapshot already contains (u <= L0),
exactly as Binance tells a client to. The stream it serves keeps Binance's continuity rule
(each event's U is the previous event's u + 1) across replay passes: pass k shifts every id by
k * (span + 1), and at the end of a pass one synthetic event (one id) takes the book back to
the snapshot, so a client that keeps its book across passes stays consistent. Pass 0 serves
the capture's own ids.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

ZERO = Decimal(0)


class Book:
    def __init__(self, symbol: str, snapshot: dict[str, Any], last_u: int) -> None:
        self.symbol = symbol
        self.l0 = int(snapshot["lastUpdateId"])
        self._snapshot = (
            {Decimal(p): Decimal(q) for p, q in snapshot["bids"]},
            {Decimal(p): Decimal(q) for p, q in snapshot["asks"]},
        )
        # Ids one pass uses: the capture's diffs cover L0+1 .. last_u; one more for the reset.
        self.span = max(last_u - self.l0, 0)
        self.passes = 0
        self.last_id = self.l0
        self.bids, self.asks = dict(self._snapshot[0]), dict(self._snapshot[1])

    @property
    def offset(self) -> int:
        return self.passes * (self.span + 1)

    def apply(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Apply one captured depthUpdate; the event as served (ids shifted), or None if the
        snapshot already holds it."""
        if int(event["u"]) <= self.l0:
            return None
        self._levels(self.bids, event["b"])
        self._levels(self.asks, event["a"])
        out = dict(event)
        # An event straddling the snapshot (or the reset) starts right after it.
        out["U"] = max(int(event["U"]) + self.offset, self.last_id + 1)
        out["u"] = int(event["u"]) + self.offset
        self.last_id = out["u"]
        return out

    def reset(self, event_ms: int) -> dict[str, Any]:
        """End of a pass: the event that takes the book back to the snapshot."""
        snap_bids, snap_asks = self._snapshot

        def changes(now: dict, snap: dict) -> list[list[str]]:
            gone = [[str(p), "0"] for p in now if p not in snap]
            return gone + [[str(p), str(q)] for p, q in snap.items() if now.get(p) != q]

        self.passes += 1
        rid = self.l0 + self.offset  # the id just before this pass's first event
        event = {
            "e": "depthUpdate",
            "E": event_ms,
            "s": self.symbol,
            "U": rid,
            "u": rid,
            "b": changes(self.bids, snap_bids),
            "a": changes(self.asks, snap_asks),
        }
        self.bids, self.asks = dict(snap_bids), dict(snap_asks)
        self.last_id = rid
        return event

    @staticmethod
    def _levels(side: dict[Decimal, Decimal], levels: list[list[str]]) -> None:
        for p, q in levels:
            price, qty = Decimal(p), Decimal(q)
            if qty == ZERO:
                side.pop(price, None)
            else:
                side[price] = qty

    def snapshot(self, limit: int) -> dict[str, Any]:
        """The REST depth answer: the current book and the id of the last event served."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return {
            "lastUpdateId": self.last_id,
            "bids": [[f"{p:f}", f"{q:f}"] for p, q in bids],
            "asks": [[f"{p:f}", f"{q:f}"] for p, q in asks],
        }

    def best(self, side: str) -> Decimal | None:
        """Best price on ``side`` ('bids' or 'asks'), None when that side is empty."""
        levels = self.bids if side == "bids" else self.asks
        if not levels:
            return None
        return max(levels) if side == "bids" else min(levels)

    def walk(self, side: str) -> list[tuple[Decimal, Decimal]]:
        """Levels of ``side`` from the best price outwards."""
        levels = self.bids if side == "bids" else self.asks
        return sorted(levels.items(), reverse=side == "bids")

    def take(self, side: str, price: Decimal, qty: Decimal) -> None:
        """Liquidity taken by a fill: gone until the replay next sets that level."""
        levels = self.bids if side == "bids" else self.asks
        left = levels.get(price, ZERO) - qty
        if left > ZERO:
            levels[price] = left
        else:
            levels.pop(price, None)

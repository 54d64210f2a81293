"""What the ccxt venue knows of its orders between calls.

Which orders are open (symbol, exchange order id, amount reported filled), which fills were
reported (by the exchange's trade id: each fill is reported once, whichever path saw it
first: an order's answer, a lookup, the stream, the REST safety net, polling), and which
orders the venue found over by itself and has not yet told the engine. The fill ids of an
order are kept while it is open and for the ``keep_ended`` orders that ended after it: a
late copy of a fill comes within moments, and the engine refuses a fill of a finished
order anyway; the set does not grow for the life of the process.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from appliance.model.orders import TERMINAL, OrderState
from appliance.venues.base import OrderStatus, VenueFill
from appliance.venues.ccxt_sweep import Tracked

_STATES = {
    "closed": OrderState.FILLED,
    "canceled": OrderState.CANCELED,
    "expired": OrderState.CANCELED,
    "rejected": OrderState.REJECTED,
}


@dataclass
class _Open:
    symbol: int
    exchange_id: str
    filled: float = 0.0  # the amount of its fills reported so far


class VenueOrders:
    """``on_change`` gets the open orders as the safety net needs them, after each change
    (``names``: ccxt symbols in index order)."""

    def __init__(
        self,
        names: list[str],
        on_change: Callable[[tuple[Tracked, ...]], None] | None = None,
        keep_ended: int = 10_000,
    ) -> None:
        self.names = names
        self.open: dict[str, _Open] = {}
        self._on_change = on_change
        self._reported: dict[str, set[str]] = {}  # client id -> its fill ids reported
        self._retired: OrderedDict[str, None] = OrderedDict()  # not open, oldest first
        self._keep_ended = keep_ended
        self._ended: list[OrderStatus] = []

    def symbol(self, cid: str) -> int | None:
        known = self.open.get(cid)
        return None if known is None else known.symbol

    def note(self, cid: str, sym: int, o: dict[str, Any]) -> OrderState:
        """The state of ccxt order ``o`` (of ``cid``), noting whether it is open."""
        xid = str(o.get("id") or "")
        known = self.open.get(cid)
        if xid and known is not None:
            known.exchange_id = xid
        elif xid and o.get("status") == "open":
            self.open[cid] = _Open(sym, xid)
            self._retired.pop(cid, None)  # a fill streamed before its order's answer
        state = _STATES.get(o.get("status") or "")
        if state is None:  # open
            filled = float(o.get("filled") or 0.0)
            state = OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.ACCEPTED
        else:
            self.open.pop(cid, None)
            self._retire(cid)
        self._changed()
        return state

    def unreported(self, fills: Iterable[VenueFill]) -> list[VenueFill]:
        """The fills not reported before, now counted as reported."""
        out = []
        for f in fills:
            seen = self._reported.setdefault(f.client_id, set())
            if f.venue_fill_id in seen:
                continue
            seen.add(f.venue_fill_id)
            out.append(f)
            known = self.open.get(f.client_id)
            if known is not None:
                known.filled += f.qty
            else:
                self._retire(f.client_id)
        if out:
            self._changed()
        return out

    def covered(self, cid: str, fills: Iterable[VenueFill], filled: float, tol: float) -> bool:
        """Whether the fills of ``cid`` reported so far and those of ``fills`` not reported
        yet add up to ``filled`` (within ``tol``)."""
        known = self.open.get(cid)
        new = {f.venue_fill_id: f.qty for f in fills}  # by id: each counted once
        seen = self._reported.get(cid, ())
        unseen = sum(q for i, q in new.items() if i not in seen)
        return (known.filled if known else 0.0) + unseen >= filled - tol

    def found(self, status: OrderStatus) -> list[VenueFill]:
        """The fills of a status the venue looked up by itself; an order found over also
        waits in ``ended`` for the engine."""
        if status.state in TERMINAL:
            self._ended.append(replace(status, fills=()))
        return list(status.fills)

    def ended(self) -> list[OrderStatus]:
        out, self._ended = self._ended, []
        return out

    def _retire(self, cid: str) -> None:
        """``cid`` is not open: its fill ids go once ``keep_ended`` orders ended after it."""
        self._retired[cid] = None
        self._retired.move_to_end(cid)
        while len(self._retired) > self._keep_ended:
            self._reported.pop(self._retired.popitem(last=False)[0], None)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(
                tuple(
                    Tracked(cid, self.names[o.symbol], o.exchange_id, o.filled)
                    for cid, o in self.open.items()
                )
            )

"""Order lifecycle: the state machine and the in-memory order objects of the execution side.

Two kinds of order exist. An *intent order* is one agent's intent as the execution process
took it in (one row per intent in the journal). A *venue order* is what was actually sent to
the venue; a netted venue order covers many intent orders, each with an allocated share.
Both move through the same states, and every change goes through ``transition`` so an
impossible sequence (a fill after a cancel, a second life after a reject) is an error at
the point it happens, never a silently wrong journal row.

Quantities are kept as integer numbers of lots (``qty_lots``, ``lot`` in base units): sums
of fills, pro-rata allocations and positions are then exact, and the float quantity is
``lots * lot`` everywhere, so two code paths always produce the same float.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class OrderState(IntEnum):
    NEW = 1  # journaled, not yet handed to the venue (or not yet crossed internally)
    SUBMITTED = 2  # handed to the venue, no answer yet
    ACCEPTED = 3  # acknowledged by the venue (resting), or accepted for an internal cross
    PARTIALLY_FILLED = 4
    FILLED = 5
    CANCELED = 6  # the unfilled remainder is void (IOC remainder, cancel request)
    REJECTED = 7  # refused before anything filled
    DONE = 8  # a CANCEL intent carried out (it never trades: see records.OrderType.CANCEL)


TERMINAL: frozenset[OrderState] = frozenset(
    {OrderState.FILLED, OrderState.CANCELED, OrderState.REJECTED, OrderState.DONE}
)
#: States an order can still leave (NEW .. PARTIALLY_FILLED).
OPEN: frozenset[OrderState] = frozenset(OrderState) - TERMINAL

_S = OrderState
#: Every legal single step. A synchronous venue answer that covers several steps (sent,
#: acked, filled) is recorded as that sequence of steps, never as one jump.
TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    # ACCEPTED straight from NEW: an internal cross never goes to the venue. DONE: only a
    # CANCEL intent, which never goes to the venue either.
    _S.NEW: frozenset({_S.SUBMITTED, _S.ACCEPTED, _S.REJECTED, _S.DONE}),
    # Fills may arrive before the ack on real venues; CANCELED covers an IOC that the venue
    # expired without an explicit ack.
    _S.SUBMITTED: frozenset(
        {_S.ACCEPTED, _S.REJECTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED}
    ),
    _S.ACCEPTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED}),
    # PARTIALLY_FILLED -> PARTIALLY_FILLED is one more partial fill.
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED}),
    _S.FILLED: frozenset(),
    _S.CANCELED: frozenset(),
    _S.REJECTED: frozenset(),
    _S.DONE: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change that the lifecycle does not allow."""

    def __init__(self, order: str, current: OrderState, new: OrderState) -> None:
        super().__init__(
            f"order {order}: illegal transition {OrderState(current).name} -> "
            f"{OrderState(new).name}"
        )
        self.order = order
        self.current = OrderState(current)
        self.new = OrderState(new)


def transition(current: OrderState, new: OrderState, order: str = "?") -> OrderState:
    """Return ``new`` if ``current -> new`` is a legal step, else raise IllegalTransition."""
    # IntEnum members hash and compare as their ints: no enum construction on this hot path.
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(order, current, new)
    return new


def walk(current: OrderState, steps: list[OrderState], order: str = "?") -> OrderState:
    """Apply a sequence of steps; the state reached, or IllegalTransition at the first bad one."""
    for step in steps:
        current = transition(current, step, order)
    return current


@dataclass(slots=True, eq=False)
class _Tracked:
    """What every order has: its terms, fills so far, and its state plus the steps taken
    since the journal last saw it.

    ``persisted`` is the state the journal holds (None: not journaled yet). The journal
    replays ``steps`` from ``persisted`` through ``transition`` and updates the row only if
    it still holds ``persisted``: a stale in-memory copy can never overwrite a newer row.
    """

    client_order_id: str
    state: OrderState = OrderState.NEW
    persisted: OrderState | None = None
    steps: list[OrderState] = field(default_factory=list)
    symbol: int = 0
    side: int = 0
    order_type: int = 0
    qty_lots: int = 0
    lot: float = 1.0
    limit_price: float = 0.0
    created_ns: int = 0
    filled_lots: int = 0
    notional: float = 0.0  # sum of fill qty * price, for the average price
    reason: int = 0  # RejectReason of a reject, or of the cause of a cancel
    reason_text: str = ""

    def advance(self, new: OrderState) -> None:
        self.state = transition(self.state, new, self.client_order_id)
        self.steps.append(new)

    def mark_persisted(self) -> None:
        self.persisted = self.state
        self.steps.clear()

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def qty(self) -> float:
        return self.qty_lots * self.lot

    @property
    def filled_qty(self) -> float:
        return self.filled_lots * self.lot

    @property
    def avg_price(self) -> float:
        return self.notional / self.filled_qty if self.filled_lots else 0.0


@dataclass(slots=True, eq=False)
class IntentOrder(_Tracked):
    """One agent intent as the execution side tracks it."""

    host: int = 0
    population: int = 0
    agent: int = 0
    intent_seq: int = 0

    @property
    def key(self) -> tuple[int, int, int, int]:
        """(host, population, agent, symbol): the portfolio's key for this order."""
        return (self.host, self.population, self.agent, self.symbol)

    @property
    def remaining_lots(self) -> int:
        return 0 if self.is_terminal else self.qty_lots - self.filled_lots


@dataclass(slots=True, eq=False)
class Allocation:
    """The share of a venue order that belongs to one intent order."""

    client_order_id: str  # the intent order
    lots: int
    filled_lots: int = 0

    @property
    def remaining_lots(self) -> int:
        return self.lots - self.filled_lots


@dataclass(slots=True, eq=False)
class VenueOrder(_Tracked):
    """One order as sent to the venue, with the intent orders it covers."""

    venue_seq: int = 0
    allocations: list[Allocation] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill of one intent order: an internal cross, or its share of a venue fill."""

    client_order_id: str  # the intent order
    host: int
    population: int
    agent: int
    symbol: int
    side: int  # +1 bought, -1 sold
    lots: int
    lot: float
    price: float
    fee: float  # quote currency, charged to the intent's owner
    liquidity: str  # 'internal' (crossed against another agent) or 'venue'
    ts_ns: int
    venue_order_id: str | None = None
    venue_fill_id: str | None = None

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.host, self.population, self.agent, self.symbol)

    @property
    def qty(self) -> float:
        return self.lots * self.lot

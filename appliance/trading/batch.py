"""One engine call's order changes, journaled together, and the reports they produce.

Every change to an order goes through a ``Batch``: it moves the order (and, for a venue
order, the intents it covers) through the state machine, keeps the book's exposure in
step, collects the rows for one journal transaction and adds the agents' reports.
``commit`` journals what was collected, and only then applies its fills to the portfolio
and drops finished orders from the book: whatever an agent is told is committed first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from appliance.model.orders import TERMINAL, Fill, IntentOrder, OrderState, VenueOrder
from appliance.model.records import RejectReason, ReportKind
from appliance.trading.journal import Journal
from appliance.trading.netting import pro_rata
from appliance.trading.open_orders import OpenOrders
from appliance.trading.portfolio import Portfolio
from appliance.trading.reports import Reports
from appliance.venues.base import OrderStatus, VenueFill

log = logging.getLogger(__name__)

_S = OrderState


@dataclass
class Counters:
    """What the engine counts for its status line."""

    intents_processed: int = 0
    duplicates: int = 0  # intents journaled before, delivered again and skipped
    venue_orders_sent: int = 0
    unknown_fills: int = 0  # venue fills for orders the book does not hold open
    fill_mismatches: int = 0  # terminal venue orders whose fills disagree with the venue
    rejects: Counter[RejectReason] = field(default_factory=Counter)


class Batch:
    def __init__(
        self,
        book: OpenOrders,
        journal: Journal,
        portfolio: Portfolio,
        counters: Counters,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.book = book
        self.journal = journal
        self.portfolio = portfolio
        self.counters = counters
        self.clock = clock
        self.reports = Reports()
        self._clear()

    def _clear(self) -> None:
        self.new_intents: list[IntentOrder] = []
        self.new_venue: list[VenueOrder] = []
        self._intents: dict[str, IntentOrder] = {}  # journaled intents that changed
        self._venue: dict[str, VenueOrder] = {}  # journaled venue orders that changed
        self._venue_fills: list[VenueFill] = []
        self._venue_fill_ids: set[tuple[str, str]] = set()  # (venue order, venue fill id)
        self._fills: list[Fill] = []

    # ---- new orders ---------------------------------------------------------------------

    def add_intents(self, orders: list[IntentOrder]) -> None:
        """New intent orders: open, or already REJECTED by the checks (then reported)."""
        self.new_intents.extend(orders)
        for o in orders:
            if o.is_terminal:
                self.counters.rejects[RejectReason(o.reason)] += 1
                self.reports.add(o, ReportKind.REJECT, reason=o.reason)
            else:
                self.book.open_intent(o)

    def add_venue_order(self, vo: VenueOrder) -> None:
        self.book.open_venue_order(vo)
        self.new_venue.append(vo)

    @property
    def venue_fill_count(self) -> int:
        """Venue fills collected since the last commit."""
        return len(self._venue_fills)

    def touch(self, o: IntentOrder | VenueOrder) -> None:
        if o.persisted is not None:  # new ones are in new_intents / new_venue
            (self._intents if isinstance(o, IntentOrder) else self._venue)[o.client_order_id] = o

    # ---- intent order changes -----------------------------------------------------------

    def submitted(self, vo: VenueOrder) -> None:
        vo.advance(_S.SUBMITTED)
        self.touch(vo)
        for a in vo.allocations:
            o = self.book.intents[a.client_order_id]
            if o.state == _S.NEW:
                o.advance(_S.SUBMITTED)
                self.touch(o)

    def accept(self, o: IntentOrder) -> None:
        o.advance(_S.ACCEPTED)
        self.touch(o)
        self.reports.add(o, ReportKind.ACK)

    def fill(
        self,
        o: IntentOrder,
        lots: int,
        price: float,
        fee: float,
        ts_ns: int,
        venue_fill: tuple[str, str] | None = None,
    ) -> None:
        """``lots`` of ``o`` traded: internally, or as its share of ``venue_fill`` (venue
        order id, venue fill id)."""
        self.book.fill(o, lots, price)
        self.touch(o)
        venue_order_id, venue_fill_id = venue_fill or (None, None)
        self._fills.append(
            Fill(
                o.client_order_id, o.host, o.population, o.agent, o.symbol, o.side, lots,
                o.lot, price, fee, "internal" if venue_fill is None else "venue", ts_ns,
                venue_order_id, venue_fill_id,
            )
        )  # fmt: skip
        self.reports.add(o, ReportKind.FILL, lots * o.lot, price, fee)

    def void(self, o: IntentOrder, reason: int, text: str) -> None:
        """End an intent with its remainder unfilled: REJECTED if nothing ever happened to
        it, else CANCELED (the agent keeps what filled)."""
        rejected = o.state in (_S.NEW, _S.SUBMITTED)
        reason = RejectReason(reason or RejectReason.VENUE)  # every end says why
        self.book.end(o, _S.REJECTED if rejected else _S.CANCELED)
        o.reason, o.reason_text = int(reason), text
        self.touch(o)
        if rejected:
            self.counters.rejects[reason] += 1
            self.reports.add(o, ReportKind.REJECT, reason=reason)
        else:
            self.reports.add(o, ReportKind.CANCEL, reason=reason)

    def done(self, o: IntentOrder, text: str) -> None:
        """A CANCEL intent is carried out: DONE, answered with one final ACK."""
        o.advance(_S.DONE)
        o.reason_text = text
        self.touch(o)
        self.reports.add(o, ReportKind.ACK)

    # ---- venue answers ------------------------------------------------------------------

    def withdraw(self, vo: VenueOrder, status: OrderStatus) -> None:
        """``vo`` was cancelled at the venue to cross its rest internally: apply the fills
        the venue made before (``status``), then end it without voiding its intents (their
        rest is crossed, and what is left goes out again in a new venue order)."""
        for f in self._unseen(status.fills):
            self._venue_fill(vo, f)
        if not vo.is_terminal:
            vo.advance(_S.CANCELED)
            vo.reason_text = "withdrawn: its rest crosses internally"
            self.touch(vo)

    def apply_status(self, vo: VenueOrder, status: OrderStatus) -> None:
        """Bring ``vo`` (and its intents) to the venue's ``status``; fills already journaled
        (by venue fill id) are skipped, so applying the same status twice changes nothing."""
        new_fills = self._unseen(status.fills)
        if vo.state == _S.NEW:
            self.submitted(vo)
        if status.state == _S.REJECTED and vo.state == _S.SUBMITTED and not new_fills:
            text = status.reason_text or "rejected by the venue"
            self.venue_rejected(vo, status.reason or RejectReason.VENUE, text)
            return
        if vo.state == _S.SUBMITTED:
            vo.advance(_S.ACCEPTED)
            self.touch(vo)
            for a in vo.allocations:
                o = self.book.intents[a.client_order_id]
                if o.state == _S.SUBMITTED:
                    self.accept(o)
        for f in new_fills:
            self._venue_fill(vo, f)
        if status.state in TERMINAL and round(status.filled_qty / vo.lot) != vo.filled_lots:
            # The venue is done with the order, yet its fills and ours disagree (fills we
            # never got, or ones it no longer has): positions differ from the venue's. Say
            # so loudly and close the order rather than leave it open forever.
            self.counters.fill_mismatches += 1
            text = (
                f"venue reports {_S(status.state).name} with {status.filled_qty} filled, the "
                f"journal holds {vo.filled_qty}"
            )
            log.error("FILL MISMATCH on venue order %s: %s", vo.client_order_id, text)
            if not vo.is_terminal:
                self.venue_ended(vo, RejectReason.VENUE, text)
        if status.state in (_S.CANCELED, _S.REJECTED) and not vo.is_terminal:
            # Every end says why: one the venue gave no reason for is the venue's.
            reason = status.reason or RejectReason.VENUE
            self.venue_ended(vo, reason, status.reason_text or "cancelled by the venue")

    def apply_fills(self, fills: list[VenueFill]) -> None:
        """Venue fills of resting orders (in the order the venue made them)."""
        for f in self._unseen(fills):
            vo = self.book.venue_orders.get(f.client_id)
            if vo is None or vo.is_terminal:
                log.warning(
                    "fill %s for unknown or finished order %s", f.venue_fill_id, f.client_id
                )
                self.counters.unknown_fills += 1
                continue
            if vo.state in (_S.NEW, _S.SUBMITTED):  # the fill proves the venue has it
                self.apply_status(vo, OrderStatus(vo.client_order_id, _S.ACCEPTED))
            self._venue_fill(vo, f)

    def apply_ended(self, statuses: list[OrderStatus]) -> None:
        """Orders the venue found over by itself (e.g. cancelled at the exchange, not by
        us); their fills came with ``apply_fills``."""
        for status in statuses:
            vo = self.book.venue_orders.get(status.client_id)
            if vo is not None:
                self.apply_status(vo, status)

    def venue_rejected(self, vo: VenueOrder, reason: int, text: str) -> None:
        vo.advance(_S.REJECTED)
        vo.reason, vo.reason_text = int(reason), text
        self.touch(vo)
        self._release(vo, reason, text)

    def venue_ended(self, vo: VenueOrder, reason: int, text: str) -> None:
        """The venue order is over with quantity left (IOC remainder, cancel, loss)."""
        vo.advance(_S.CANCELED)
        vo.reason, vo.reason_text = int(reason), text
        self.touch(vo)
        self._release(vo, reason, text)

    def _release(self, vo: VenueOrder, reason: int, text: str) -> None:
        """The unfilled shares of a finished venue order are void for their intents."""
        for a in vo.allocations:
            o = self.book.intents.get(a.client_order_id)
            if a.remaining_lots and o is not None and not o.is_terminal:
                self.void(o, reason, text)

    def _unseen(self, fills: Sequence[VenueFill]) -> list[VenueFill]:
        if not fills:
            return []
        # Only a venue order the book holds with fills may have them journaled already:
        # every fill journaled for an open order is in its filled lots.
        journaled = [f for f in fills if self._may_be_journaled(f.client_id)]
        # Keyed per venue order: fill ids are only unique per order at some venues.
        known = self.journal.reads.known_venue_fill_ids(
            (f.client_id, f.venue_fill_id) for f in journaled
        ) if journaled else set()
        known |= self._venue_fill_ids
        return [f for f in fills if (f.client_id, f.venue_fill_id) not in known]

    def _may_be_journaled(self, venue_order_id: str) -> bool:
        vo = self.book.venue_orders.get(venue_order_id)
        return vo is None or vo.filled_lots > 0

    def _venue_fill(self, vo: VenueOrder, f: VenueFill) -> None:
        lots = round(f.qty / vo.lot)
        if not 0 < lots <= vo.qty_lots - vo.filled_lots:
            raise RuntimeError(
                f"venue fill {f.venue_fill_id} of {f.qty} does not fit order "
                f"{vo.client_order_id} ({vo.filled_qty} of {vo.qty} filled)"
            )
        vo.filled_lots += lots
        vo.notional += lots * vo.lot * f.price
        vo.advance(_S.FILLED if vo.filled_lots == vo.qty_lots else _S.PARTIALLY_FILLED)
        self.touch(vo)
        self._venue_fills.append(f)
        self._venue_fill_ids.add((f.client_id, f.venue_fill_id))
        source = (vo.client_order_id, f.venue_fill_id)
        shares = pro_rata(lots, [a.remaining_lots for a in vo.allocations])
        for a, share in zip(vo.allocations, shares.tolist(), strict=True):
            if share:
                a.filled_lots += share
                fee = f.fee * share / lots  # fees split pro rata (float)
                o = self.book.intents[a.client_order_id]
                self.fill(o, share, f.price, fee, f.ts_ns, source)

    # ---- commit -------------------------------------------------------------------------

    def commit(self) -> None:
        """Journal what was collected, then (and only then) apply its fills to the
        portfolio and drop finished orders from the book. The batch is empty afterwards;
        its reports stay."""
        intents, venue = self._intents.values(), self._venue.values()
        if not (self.new_intents or self.new_venue or intents or venue or self._fills):
            return
        self.journal.write(
            new_intents=self.new_intents,
            intent_updates=[o for o in intents if o.steps],
            new_venue_orders=self.new_venue,
            venue_updates=[v for v in venue if v.steps],
            venue_fills=self._venue_fills,
            fills=self._fills,
            now_ns=self.clock(),
        )
        self.portfolio.apply_all(self._fills)  # same fills, same order as the journal's fill_id
        self.book.drop_finished((*self.new_intents, *intents), (*self.new_venue, *venue))
        self._clear()

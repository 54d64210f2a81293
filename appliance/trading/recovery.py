"""Recovery and reconciliation: the open-order book made to agree with journal and venue.

At the start of a run (``Recovery.start``) the open orders are reloaded from the journal and
each open venue order is looked up at the venue by its client id: fills the journal lacks
are applied; an order the venue never received is rejected, not resent (the market has
moved since the agent decided; a late market order is a surprise trade, and not resending
makes a double send impossible by construction); an open intent no venue order covers any
more is void; resting orders with our id format that the journal lacks are cancelled.
During the run, venue orders whose submit raised (in doubt) are looked up the same way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from appliance.model.orders import OrderState, VenueOrder
from appliance.model.records import RejectReason
from appliance.model.universe import Universe
from appliance.trading.batch import Batch
from appliance.trading.checkpoint import PositionsCheckpoint
from appliance.trading.journal import Journal
from appliance.trading.layout_check import LayoutMismatch, journal_problems
from appliance.trading.open_orders import OpenOrders
from appliance.venues.base import Venue

log = logging.getLogger(__name__)

_UNSENT = "never reached the venue (execution restarted before sending); not resent"


@dataclass(frozen=True)
class RecoverySummary:
    run_id: int
    epoch: str
    open_intents: int  # non-terminal intent orders reloaded from the journal
    venue_orders_checked: int  # open venue orders looked up at the venue
    fills_applied: int  # venue fills the journal lacked, now applied
    fills_replayed: int  # journaled fills read to rebuild positions (after the checkpoint)
    unsent_rejected: int  # journaled venue orders the venue never received
    orphans_canceled: int  # resting orders at the venue with our id format, unknown here
    last_intent_seq: dict[int, int]  # per host, the highest intent seq journaled (epoch)
    reports: dict[int, np.ndarray]  # what agents must be told about the above

    def __str__(self) -> str:  # one log line, without the report arrays
        n = sum(len(r) for r in self.reports.values())
        return (
            f"run {self.run_id} (epoch {self.epoch}): {self.fills_replayed} fills replayed, "
            f"{self.open_intents} open intents, "
            f"{self.venue_orders_checked} venue orders checked, {self.fills_applied} fills "
            f"applied, {self.unsent_rejected} unsent rejected, {self.orphans_canceled} orphans "
            f"cancelled, last intent seqs {self.last_intent_seq}, {n} reports"
        )


class Recovery:
    def __init__(self, journal: Journal, venue: Venue, book: OpenOrders) -> None:
        self.journal = journal
        self.venue = venue
        self.book = book

    def check_layout(self, universe: Universe) -> None:
        """Raise LayoutMismatch if ``universe`` contradicts positions open in the journal."""
        problems = journal_problems(self.journal, *_layout(universe))
        if problems:
            raise LayoutMismatch(self.journal.path, problems)

    def start(
        self,
        epoch: str | int | None,
        universe: Universe,
        positions: PositionsCheckpoint,
        b: Batch,
    ) -> RecoverySummary:
        """Begin a run with ``universe`` (``check_layout`` it first), load the (empty)
        portfolio of ``positions`` (its checkpoint and the fills after it) and the book from
        the journal, settle every open venue order with the venue, and commit ``b``.

        ``epoch`` names the lifetime of the intent queues (see Journal.begin_run)."""
        now = b.clock()
        symbols, lots, agents = _layout(universe)
        run_id = self.journal.begin_run(epoch, now, symbols=symbols, lots=lots, agents=agents)
        reads = self.journal.reads
        self.book.load(reads.open_orders(), reads.open_venue_orders())
        replayed = positions.restore()
        open_intents = len(self.book.intents)
        checked = len(self.book.venue_orders)
        fills, unsent = self._reconcile(list(self.book.venue_orders.values()), b)
        for o in self.book.uncovered():
            b.void(o, RejectReason.VENUE, "no open venue order covers it at restart")
        orphans = self._cancel_orphans()
        b.commit()
        return RecoverySummary(
            run_id=run_id,
            epoch=str(self.journal.epoch),
            open_intents=open_intents,
            venue_orders_checked=checked,
            fills_applied=fills,
            fills_replayed=replayed,
            unsent_rejected=unsent,
            orphans_canceled=orphans,
            last_intent_seq=self.journal.reads.max_intent_seqs(self.journal.epoch),
            reports=b.reports.build(now),
        )

    def _reconcile(self, orders: list[VenueOrder], b: Batch) -> tuple[int, int]:
        """Look ``orders`` up at the venue and apply what it says; (venue fills applied,
        orders the venue never received)."""
        applied = unsent = 0
        for vo in orders:
            status = self.venue.fetch_order(vo.client_order_id)
            self.book.in_doubt.discard(vo.client_order_id)
            if status is None:
                unsent += 1
                if vo.state in (OrderState.NEW, OrderState.SUBMITTED):
                    b.venue_rejected(vo, RejectReason.VENUE, _UNSENT)
                else:  # it knew the order once: it lost it, the rest is void
                    b.venue_ended(vo, RejectReason.VENUE, "venue lost the order")
                continue
            n_before = b.venue_fill_count
            b.apply_status(vo, status)
            applied += b.venue_fill_count - n_before
        return applied, unsent

    def retry_in_doubt(self, b: Batch) -> None:
        """Look up the venue orders whose submit raised; a lookup that fails too leaves the
        order in doubt for the next try."""
        for cid in list(self.book.in_doubt):
            vo = self.book.venue_orders.get(cid)
            if vo is None:
                self.book.in_doubt.discard(cid)
                continue
            try:
                self._reconcile([vo], b)
            except Exception:
                log.exception("venue lookup of %s failed; still in doubt", cid)
                self.book.in_doubt.add(cid)

    def _cancel_orphans(self) -> int:
        """Cancel resting venue orders that carry our id format but the journal lacks.

        They cannot be attributed to any agent (only a lost journal produces them), so the
        safe action is to take them off the market.
        """
        n = 0
        for status in self.venue.open_orders():
            cid = status.client_id
            if cid in self.book.venue_orders or not _is_venue_id(cid):
                continue
            if self.journal.reads.venue_order(cid) is None:
                log.warning("cancelling orphan venue order %s (not in the journal)", cid)
                self.venue.cancel(cid)
                n += 1
        return n


def _is_venue_id(cid: str) -> bool:
    run, _, n = cid.partition("-v")
    return run.isdigit() and n.isdigit()


def _layout(universe: Universe) -> tuple[list[str], list[float], dict | None]:
    """What the journal records of a universe: symbols, lots, agents per (host, population)."""
    agents = None if universe.agents is None else universe.agents.counts
    return list(universe.symbols), universe.lots.tolist(), agents

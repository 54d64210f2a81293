"""ExecutionEngine: validate, risk-check, journal, net, send, journal, report.

One ``process`` call handles one batch of intents from every host:

1. drop intents already journaled in this epoch (re-delivery after a consumer crash);
2. validate (BAD_ORDER, UNKNOWN_SYMBOL) and risk-check (limits, trading state);
3. net MARKET intents per symbol: crossed quantities fill internally at the mid, the net
   quantity becomes one venue order; each LIMIT intent becomes its own venue order;
4. commit #1: every intent (NEW, or REJECTED with its reason), the internal fills and every
   venue order about to be sent, with the intents it covers. Nothing has been sent yet;
5. send the venue orders;
6. commit #2: acks, rejects, fills (each venue fill split pro rata over the intents it
   covers), cancels of IOC remainders;
7. update the portfolio and return the reports, grouped by host.

Reports are built only from committed state, so whatever an agent was told survives a
crash. A crash between 4 and 6 is repaired by ``recover`` (see recovery.py). The pieces:
the open orders live in an ``OrderBook``; every change to them is made and journaled
through a ``Batch``; ``Recovery`` settles them with the venue at the start of a run and
when a submit's outcome is unknown.

A journal error (disk full, a row in an unexpected state) propagates and leaves the
engine unusable: the process must exit and ``recover`` from the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.orders import Allocation, IntentOrder, OrderState, VenueOrder
from appliance.model.records import INTENT, OrderType, RejectReason
from appliance.storage.sqlite import storage_failure
from appliance.trading.batch import Batch, Counters
from appliance.trading.book import OrderBook
from appliance.trading.checkpoint import EVERY_FILLS, PositionsCheckpoint
from appliance.trading.journal import Journal
from appliance.trading.netting import net_market
from appliance.trading.portfolio import Key, Portfolio
from appliance.trading.recovery import Recovery, RecoverySummary, RunLayout
from appliance.trading.risk import RiskEngine, RiskLimits, validate_intents
from appliance.venues.base import OrderRequest, QuoteBook, Venue

log = logging.getLogger(__name__)

__all__ = ["EngineConfig", "ExecutionEngine"]

_PASS = RejectReason.NONE


@dataclass(frozen=True)
class EngineConfig:
    lot_size: float = 1e-8  # default lot of every symbol, base units
    lot_sizes: Mapping[str, float] = field(default_factory=dict)  # per-symbol overrides
    internal_fee_bps: float = 0.0  # charged to both sides of an internal cross
    checkpoint_fills: int = EVERY_FILLS  # positions checkpoint at least every so many fills


class _Checked(NamedTuple):
    """A batch of fresh intents after validation and risk, as arrays aligned per intent."""

    reasons: np.ndarray  # RejectReason, NONE: passes
    lots: np.ndarray  # quantity on the symbol's lot grid (0 where rejected)
    symbol: np.ndarray  # symbol index (0 where invalid)
    side: np.ndarray
    order_type: np.ndarray
    lot: np.ndarray  # the symbol's lot size


class _Seen:
    """Which intents this epoch's journal already holds, per host: a high-water mark of
    the seqs journaled, and the journal for anything at or below it."""

    def __init__(self, journal: Journal, marks: Mapping[int, int]) -> None:
        self.journal = journal
        self.marks = dict(marks)  # per host, the highest seq journaled in the epoch

    def fresh(self, intents: np.ndarray) -> np.ndarray:
        """Mask of the intents not yet journaled (first copy within the batch).

        Fast path: a host's seqs all above its mark and increasing (a FIFO queue delivering
        new records) need no lookup; otherwise the journal is asked.
        """
        keep = np.ones(len(intents), bool)
        host = intents["host"]
        seq = intents["seq"].astype(np.int64)
        for h in np.unique(host).tolist():
            idx = np.flatnonzero(host == h)
            s = seq[idx]
            mark = self.marks.get(h, -1)
            if s[0] > mark and (len(s) == 1 or bool(np.all(s[1:] > s[:-1]))):
                continue
            old = self.journal.journaled_seqs(h, s[s <= mark].tolist())
            seen: set[int] = set()
            for j, q in zip(idx.tolist(), s.tolist(), strict=True):
                if q in old or q in seen:
                    keep[j] = False
                seen.add(q)
        return keep

    def journaled(self, intents: np.ndarray) -> None:
        """``intents`` are journaled now: raise the marks."""
        for h, s in zip(intents["host"].tolist(), intents["seq"].tolist(), strict=True):
            if s > self.marks.get(h, -1):
                self.marks[h] = s


class ExecutionEngine:
    """The execution side's logic, drivable in one process.

    ``symbols`` are the instrument names in index order (an intent's ``symbol`` is an
    index into it). ``agents`` is the agent count per (host, population), recorded with the
    run and checked against open positions at ``recover`` (None: agents not checked). The
    engine owns ``journal`` and ``venue`` (``close`` closes both). Call ``recover`` once
    before anything else.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        limits: RiskLimits | Mapping[str, RiskLimits],
        journal: Journal,
        venue: Venue,
        config: EngineConfig | None = None,
        clock: Callable[[], int] = time.time_ns,
        agents: Mapping[tuple[int, int], int] | None = None,
    ) -> None:
        self.config = config or EngineConfig()
        self.symbols = list(symbols)
        self.agents = None if agents is None else dict(agents)
        self.lots = np.array(
            [self.config.lot_sizes.get(s, self.config.lot_size) for s in self.symbols], float
        )
        self.risk = RiskEngine(self.symbols, limits)
        self.journal = journal
        self.venue = venue
        self.quotes = QuoteBook(len(self.symbols))
        self.portfolio = Portfolio()
        self.book = OrderBook()
        self.counters = Counters()
        self._recovery = Recovery(journal, venue, self.book)
        self._checkpoint = PositionsCheckpoint(
            journal, self.portfolio, self.config.checkpoint_fills
        )
        self._clock = clock
        self._seen = _Seen(journal, {})
        self._recovered = False

    def set_trading_state(self, state: TradingState | str) -> None:
        self.risk.set_state(state)

    @property
    def duplicates(self) -> int:
        """Intents skipped because they were journaled before (re-delivered)."""
        return self.counters.duplicates

    @property
    def open_orders(self) -> int:
        return len(self.book.intents)

    def recover(self, epoch: str | int | None = None) -> RecoverySummary:
        """Begin a run and make the engine agree with the journal and the venue.

        ``epoch`` names the lifetime of the intent queues (see Journal.begin_run): pass the
        same value as the crashed run when the queues survived it, so intents it journaled
        and that are delivered again are recognised as duplicates.

        Raises LayoutMismatch, with nothing written, if the symbols, lots or agents
        contradict positions open in the journal (see layout_check.py).
        """
        if self._recovered:
            raise RuntimeError("recover() runs once per engine")
        layout = RunLayout(self.symbols, self.lots.tolist(), self.agents)
        self._recovery.check_layout(layout)  # before anything is written
        # From here a failure leaves the engine unusable: the process exits, and recovers.
        self._recovered = True
        summary = self._recovery.start(epoch, layout, self._checkpoint, self._batch())
        self._seen = _Seen(self.journal, summary.last_intent_seq)
        self._checkpoint_if_due()
        return summary

    def _checkpoint_if_due(self) -> None:
        """After an engine call's commits: a positions checkpoint when enough fills passed."""
        if self._checkpoint.due():
            self._checkpoint.save()

    def _batch(self) -> Batch:
        return Batch(self.book, self.journal, self.portfolio, self.counters, self._clock)

    def _need_run(self) -> None:
        if not self._recovered:
            raise RuntimeError("call recover() before using the engine")

    # ---- intents ------------------------------------------------------------------------

    def process(self, intents: np.ndarray) -> dict[int, np.ndarray]:
        """Handle one batch of INTENT records; the REPORT records per host.

        Every intent is journaled before this returns, or was already journaled (then it is
        skipped and counted in ``duplicates``).
        """
        self._need_run()
        if intents.dtype != INTENT:
            raise TypeError(f"expected INTENT records, got {intents.dtype}")
        b = self._batch()
        if self.book.in_doubt:
            self._recovery.retry_in_doubt(b)
        now = self._clock()
        fresh = self._seen.fresh(intents)
        self.counters.duplicates += len(intents) - int(fresh.sum())
        intents = intents[fresh]
        self.counters.intents_processed += len(intents)
        if len(intents):
            checked = self._check(intents)
            orders = self._take(intents, checked, b)
            self._route(orders, checked, now, b)
        to_send = list(b.new_venue)
        b.commit()  # commit #1: journaled before anything is sent
        self._seen.journaled(intents)
        for vo in to_send:
            self._send(vo, b)
        b.commit()  # commit #2: what the venue said
        self._checkpoint_if_due()
        return b.reports.build(self._clock())

    def _check(self, intents: np.ndarray) -> _Checked:
        """Validate, then risk-check at the price each intent would trade at."""
        reasons, lots = validate_intents(intents, self.lots)
        sym = np.where(reasons == _PASS, intents["symbol"], 0).astype(np.intp)
        side = intents["side"].astype(np.int64)
        otype = intents["order_type"]
        lot = self.lots[sym]
        # A market order is valued at the price it would take; it needs a two-sided quote
        # (internal crosses price at the mid).
        mid = self.quotes.mid[sym]
        take = np.where(side > 0, self.quotes.ask[sym], self.quotes.bid[sym])
        take = np.where(np.isfinite(mid), take, np.nan)
        # A LIMIT order is valued at the highest price it can trade at: a buy at its limit
        # (it takes the ask only if ask <= limit, and rests at the limit); a sell at the
        # bid if that is above its limit (a marketable sell takes the bid), else its limit.
        # fmax: an unknown bid (NaN) leaves the limit.
        limit_px = intents["limit_price"]
        limit_ref = np.where(side < 0, np.fmax(limit_px, self.quotes.bid[sym]), limit_px)
        ref = np.where(otype == OrderType.LIMIT, limit_ref, take)
        n = len(intents)
        host, pop, agent = (intents[f].tolist() for f in ("host", "population", "agent"))
        sym_l = sym.tolist()
        position, open_buy, open_sell = np.zeros(n), np.zeros(n), np.zeros(n)
        for i in np.flatnonzero(reasons == _PASS).tolist():
            key = (host[i], pop[i], agent[i], sym_l[i])
            position[i] = self.portfolio.position(key)
            buy, sell = self.book.exposure(key)
            open_buy[i], open_sell[i] = buy * lot[i], sell * lot[i]
        reasons = self.risk.check(intents, lots * lot, ref, position, open_buy, open_sell, reasons)
        return _Checked(reasons, lots, sym, side, otype, lot)

    def _take(self, intents: np.ndarray, c: _Checked, b: Batch) -> list[IntentOrder]:
        """One intent order per intent, into the batch (rejected ones with their reason)."""
        cols = ("host", "population", "agent", "seq", "symbol", "limit_price", "created_ns")
        host, pop, agent, seq, raw_sym, limit, created = (intents[f].tolist() for f in cols)
        side, otype, lots, lot, reason = (
            x.tolist() for x in (c.side, c.order_type, c.lots, c.lot, c.reasons)
        )
        orders = []
        for i in range(len(intents)):
            o = IntentOrder(
                client_order_id=self.journal.intent_client_id(host[i], seq[i]),
                host=host[i], population=pop[i], agent=agent[i], intent_seq=seq[i],
                symbol=raw_sym[i], side=side[i], order_type=otype[i], qty_lots=lots[i],
                lot=lot[i], limit_price=_finite(limit[i]), created_ns=created[i],
            )  # fmt: skip
            if reason[i] != _PASS:
                o.advance(OrderState.REJECTED)
                o.reason, o.reason_text = reason[i], _reject_text(reason[i], intents[i])
            orders.append(o)
        b.add_intents(orders)
        return orders

    def _route(self, orders: list[IntentOrder], c: _Checked, now: int, b: Batch) -> None:
        """Cross MARKET intents internally per symbol and make venue orders of the rest;
        each LIMIT intent becomes a venue order of its own."""
        live = np.flatnonzero(c.reasons == _PASS)
        market = live[c.order_type[live] == OrderType.MARKET]
        fee_rate = self.config.internal_fee_bps / 1e4
        for net in net_market(c.symbol[market], c.side[market], c.lots[market]):
            members = market[net.members]
            price = float(self.quotes.mid[net.symbol])
            allocs = []
            for i, internal, venue in zip(
                members.tolist(), net.internal.tolist(), net.venue.tolist(), strict=True
            ):
                o = orders[i]
                if internal:
                    b.accept(o)
                    b.fill(o, internal, price, internal * o.lot * price * fee_rate, now)
                if venue:
                    allocs.append(Allocation(o.client_order_id, venue))
            if net.venue_lots:
                self._new_venue_order(
                    net.symbol, int(net.side), OrderType.MARKET, net.venue_lots, 0.0, allocs,
                    now, b,
                )  # fmt: skip
        for i in live[c.order_type[live] == OrderType.LIMIT].tolist():
            o = orders[i]
            alloc = [Allocation(o.client_order_id, o.qty_lots)]
            self._new_venue_order(
                o.symbol, o.side, OrderType.LIMIT, o.qty_lots, o.limit_price, alloc, now, b
            )

    def _new_venue_order(
        self,
        symbol: int,
        side: int,
        order_type: int,
        lots: int,
        limit: float,
        allocs: list[Allocation],
        now: int,
        b: Batch,
    ) -> None:
        seq, cid = self.journal.next_venue_order_id()
        b.add_venue_order(
            VenueOrder(
                client_order_id=cid, venue_seq=seq, symbol=symbol, side=side,
                order_type=order_type, qty_lots=lots, lot=float(self.lots[symbol]),
                limit_price=limit, created_ns=now, allocations=allocs,
            )
        )  # fmt: skip

    def _send(self, vo: VenueOrder, b: Batch) -> None:
        b.submitted(vo)
        request = OrderRequest(
            vo.client_order_id, vo.symbol, vo.side, vo.order_type, vo.qty, vo.limit_price
        )
        try:
            status = self.venue.submit(request)
        except Exception as exc:
            if storage_failure(exc):
                raise  # the paper venue's own file: execution halts (storage_halt.py)
            # Sent or not, we cannot tell: stays SUBMITTED and is looked up later.
            log.exception("submit of %s failed; will reconcile", vo.client_order_id)
            self.book.in_doubt.add(vo.client_order_id)
            return
        self.counters.venue_orders_sent += 1
        if status.duplicate:
            # The venue already has this id: it is the truth, never a reject.
            fetched = self.venue.fetch_order(vo.client_order_id)
            if fetched is None:
                self.book.in_doubt.add(vo.client_order_id)
                return
            status = fetched
        b.apply_status(vo, status)

    # ---- market data and cancels --------------------------------------------------------

    def on_ticks(self, ticks: np.ndarray) -> dict[int, np.ndarray]:
        """Update quotes and marks; journal and report fills of resting orders."""
        self._need_run()
        self.quotes.update(ticks)
        fills = self.venue.on_ticks(ticks)
        if not (fills or self.book.in_doubt):
            return {}
        b = self._batch()
        b.apply_fills(fills)
        if self.book.in_doubt:  # not only when intents arrive: a quiet engine settles them too
            self._recovery.retry_in_doubt(b)
        b.commit()
        self._checkpoint_if_due()
        return b.reports.build(self._clock())

    def cancel_all(self) -> dict[int, np.ndarray]:
        """Cancel every resting venue order (e.g. on halt); the reports for their intents."""
        self._need_run()
        b = self._batch()
        for vo in list(self.book.venue_orders.values()):
            status = self.venue.cancel(vo.client_order_id)
            if status is not None:
                b.apply_status(vo, status)
        b.commit()
        return b.reports.build(self._clock())

    # ---- stop and status ----------------------------------------------------------------

    def record_drained(self, host_seqs: Mapping[int, int]) -> None:
        """Clean stop: per host, the intent queue head (records ever pushed, one past the
        last seq) up to which this run drained, stored with the run."""
        self.journal.record_drained(host_seqs, self._clock())
        self._checkpoint.save()  # the next start replays nothing

    def close(self) -> None:
        self.journal.close()
        self.venue.close()

    def positions(self) -> dict[Key, float]:
        """Non-flat positions per (host, population, agent, symbol), base units."""
        return self.portfolio.positions()

    def status(self) -> dict[str, Any]:
        """Counters and PnL for a status line (JSON-friendly)."""
        totals = self.portfolio.totals(self.quotes.mid)
        c = self.counters
        return {
            "run_id": self.journal.run_id,
            "trading": self.risk.state.value,
            "intents": c.intents_processed,
            "duplicates": c.duplicates,
            "fills": self.portfolio.fill_count,
            "open_orders": self.open_orders,
            "venue_orders": c.venue_orders_sent,
            "in_doubt": len(self.book.in_doubt),
            "fill_mismatches": c.fill_mismatches,
            "unknown_fills": c.unknown_fills,
            "rejects": {r.name: n for r, n in sorted(c.rejects.items())},
            "realized": totals.realized,
            "unrealized": totals.unrealized,
            "fees": totals.fees,
        }


def _finite(x: float) -> float:
    """SQLite stores NaN as NULL; keep garbage from a rejected intent storable."""
    return x if np.isfinite(x) else 0.0


def _reject_text(reason: int, r: np.void) -> str:
    return (
        f"{RejectReason(reason).name}: qty={float(r['qty'])!r} side={int(r['side'])} "
        f"type={int(r['order_type'])} limit={float(r['limit_price'])!r} "
        f"symbol={int(r['symbol'])}"
    )

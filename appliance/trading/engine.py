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
crash. A crash between 4 and 6 is repaired by ``recover``: each open venue order is looked
up at the venue by its client id; an order the venue never received is rejected, not
resent (the market has moved since the agent decided; a late market order is a surprise
trade, and not resending makes a double send impossible by construction).

A journal error (disk full, a row in an unexpected state) propagates and leaves the
engine unusable: the process must exit and ``recover`` from the journal.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.orders import (
    TERMINAL,
    Allocation,
    Fill,
    IntentOrder,
    OrderState,
    VenueOrder,
)
from appliance.model.records import INTENT, REPORT, OrderType, RejectReason, ReportKind
from appliance.trading.journal import Journal, LayoutMismatch
from appliance.trading.netting import net_market, pro_rata
from appliance.trading.portfolio import Key, Portfolio
from appliance.trading.risk import RiskEngine, RiskLimits, validate_intents
from appliance.venues.base import OrderRequest, OrderStatus, QuoteBook, Venue, VenueFill

log = logging.getLogger(__name__)

__all__ = ["EngineConfig", "ExecutionEngine", "LayoutMismatch", "RecoverySummary"]

_S = OrderState


@dataclass(frozen=True)
class EngineConfig:
    lot_size: float = 1e-8  # default lot of every symbol, base units
    lot_sizes: Mapping[str, float] = field(default_factory=dict)  # per-symbol overrides
    internal_fee_bps: float = 0.0  # charged to both sides of an internal cross


@dataclass(frozen=True)
class RecoverySummary:
    run_id: int
    epoch: str
    open_intents: int  # non-terminal intent orders reloaded from the journal
    venue_orders_checked: int  # open venue orders looked up at the venue
    fills_applied: int  # venue fills the journal lacked, now applied
    unsent_rejected: int  # journaled venue orders the venue never received
    orphans_canceled: int  # resting orders at the venue with our id format, unknown here
    last_intent_seq: dict[int, int]  # per host, the highest intent seq journaled (epoch)
    reports: dict[int, np.ndarray]  # what agents must be told about the above

    def __str__(self) -> str:  # one log line, without the report arrays
        n = sum(len(r) for r in self.reports.values())
        return (
            f"run {self.run_id} (epoch {self.epoch}): {self.open_intents} open intents, "
            f"{self.venue_orders_checked} venue orders checked, {self.fills_applied} fills "
            f"applied, {self.unsent_rejected} unsent rejected, {self.orphans_canceled} orphans "
            f"cancelled, last intent seqs {self.last_intent_seq}, {n} reports"
        )


class _Reports:
    """REPORT rows collected in event order, turned into one array per host at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(
        self,
        o: IntentOrder,
        kind: ReportKind,
        qty: float = 0.0,
        price: float = 0.0,
        fee: float = 0.0,
        reason: int = 0,
    ) -> None:
        # final: this report leaves the intent in a terminal state, so it is its last.
        self.rows.append(
            (o.host, o.intent_seq, qty, price, fee, o.agent, o.population, o.symbol, kind,
             reason, o.side, int(o.is_terminal))
        )  # fmt: skip

    def build(self, ts_ns: int) -> dict[int, np.ndarray]:
        if not self.rows:
            return {}
        cols = list(zip(*self.rows, strict=True))
        out = np.zeros(len(self.rows), REPORT)
        for name, col in zip(
            ("intent_seq", "fill_qty", "fill_price", "fee", "agent", "population", "symbol",
             "kind", "reason", "side", "final"),
            cols[1:],
            strict=True,
        ):  # fmt: skip
            out[name] = col
        out["ts_ns"] = ts_ns
        host = np.array(cols[0])
        return {int(h): out[host == h] for h in np.unique(host)}


class _Batch:
    """Everything one journal transaction will hold."""

    def __init__(self, reports: _Reports) -> None:
        self.reports = reports
        self.new_intents: list[IntentOrder] = []
        self.new_venue: list[VenueOrder] = []
        self.intents: dict[str, IntentOrder] = {}  # journaled intents that changed
        self.venue: dict[str, VenueOrder] = {}  # journaled venue orders that changed
        self.venue_fills: list[VenueFill] = []
        self.venue_fill_ids: set[tuple[str, str]] = set()  # (venue order, venue fill id)
        self.fills: list[Fill] = []

    def touch(self, o: IntentOrder | VenueOrder) -> None:
        if o.persisted is not None:  # new ones are in new_intents / new_venue
            (self.intents if isinstance(o, IntentOrder) else self.venue)[o.client_order_id] = o


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
        self._clock = clock
        self._intents: dict[str, IntentOrder] = {}  # non-terminal intent orders
        self._venue_orders: dict[str, VenueOrder] = {}  # non-terminal venue orders
        self._exposure: dict[Key, list[int]] = {}  # open [buy, sell] lots per agent/symbol
        self._max_seq: dict[int, int] = {}  # per host, highest seq journaled in the epoch
        self._in_doubt: set[str] = set()  # submits that raised: state at venue unknown
        self._recovered = False
        self.intents_processed = 0
        self.duplicates = 0
        self.venue_orders_sent = 0
        self.unknown_fills = 0
        self.fill_mismatches = 0  # terminal venue orders whose fills disagree with the venue
        self.rejects: Counter[RejectReason] = Counter()

    def set_trading_state(self, state: TradingState | str) -> None:
        self.risk.set_state(state)

    # ---- recovery -----------------------------------------------------------------------

    def recover(self, epoch: str | int | None = None) -> RecoverySummary:
        """Begin a run and make the engine agree with the journal and the venue.

        ``epoch`` names the lifetime of the intent queues (see Journal.begin_run): pass the
        same value as the crashed run when the queues survived it, so intents it journaled
        and that are delivered again are recognised as duplicates.

        Raises LayoutMismatch, with nothing written, if the symbols, lots or agents
        contradict positions open in the journal (see ``Journal.layout_problems``).
        """
        if self._recovered:
            raise RuntimeError("recover() runs once per engine")
        # Fills are keyed by symbol index and agent; a changed table would replay them onto
        # other symbols/agents, or crash the portfolio after the journal committed (a crash
        # loop). Refuse before anything is written.
        lots = self.lots.tolist()
        problems = self.journal.layout_problems(self.symbols, lots, self.agents)
        if problems:
            raise LayoutMismatch(self.journal.path, problems)
        now = self._clock()
        run_id = self.journal.begin_run(
            epoch, now, symbols=self.symbols, lots=lots, agents=self.agents
        )
        self._recovered = True
        self._intents = {o.client_order_id: o for o in self.journal.open_orders()}
        for o in self._intents.values():
            self._expose(o, +1)
        self._venue_orders = {v.client_order_id: v for v in self.journal.open_venue_orders()}
        self.portfolio = Portfolio.from_fills(self.journal.fills())
        open_intents = len(self._intents)
        reports = _Reports()
        b = _Batch(reports)
        checked = len(self._venue_orders)
        fills, unsent = self._reconcile(list(self._venue_orders.values()), b)
        # An open intent that no open venue order covers can never finish: void it.
        covered = {
            a.client_order_id
            for v in self._venue_orders.values()
            if not v.is_terminal
            for a in v.allocations
            if a.remaining_lots
        }
        for o in list(self._intents.values()):
            if not o.is_terminal and o.client_order_id not in covered:
                self._void(o, RejectReason.VENUE, "no open venue order covers it at restart", b)
        orphans = self._cancel_orphans(b)
        self._commit(b)
        self._max_seq = self.journal.max_intent_seqs(epoch=self.journal.epoch)
        return RecoverySummary(
            run_id=run_id,
            epoch=str(self.journal.epoch),
            open_intents=open_intents,
            venue_orders_checked=checked,
            fills_applied=fills,
            unsent_rejected=unsent,
            orphans_canceled=orphans,
            last_intent_seq=dict(self._max_seq),
            reports=reports.build(now),
        )

    def reconcile(self) -> dict[int, np.ndarray]:
        """Ask the venue about every open venue order; apply what the journal lacks."""
        self._need_run()
        reports = _Reports()
        b = _Batch(reports)
        self._reconcile(list(self._venue_orders.values()), b)
        self._commit(b)
        return reports.build(self._clock())

    def _reconcile(self, orders: list[VenueOrder], b: _Batch) -> tuple[int, int]:
        """(venue fills applied, orders the venue never received)."""
        applied = unsent = 0
        for vo in orders:
            status = self.venue.fetch_order(vo.client_order_id)
            self._in_doubt.discard(vo.client_order_id)
            if status is None:
                unsent += 1
                text = "never reached the venue (execution restarted before sending); not resent"
                if vo.state in (_S.NEW, _S.SUBMITTED):
                    self._venue_rejected(vo, RejectReason.VENUE, text, b)
                else:  # it knew the order once: it lost it, the rest is void
                    self._venue_ended(vo, RejectReason.VENUE, "venue lost the order", b)
                continue
            n_before = len(b.venue_fills)
            self._apply_status(vo, status, b)
            applied += len(b.venue_fills) - n_before
        return applied, unsent

    def _cancel_orphans(self, b: _Batch) -> int:
        """Cancel resting venue orders that carry our id format but the journal lacks.

        They cannot be attributed to any agent (only a lost journal produces them), so the
        safe action is to take them off the market.
        """
        n = 0
        for status in self.venue.open_orders():
            cid = status.client_id
            if cid in self._venue_orders or not _is_venue_id(cid):
                continue
            if self.journal.venue_order(cid) is None:
                log.warning("cancelling orphan venue order %s (not in the journal)", cid)
                self.venue.cancel(cid)
                n += 1
        return n

    # ---- intents ------------------------------------------------------------------------

    def process(self, intents: np.ndarray) -> dict[int, np.ndarray]:
        """Handle one batch of INTENT records; the REPORT records per host.

        Every intent is journaled before this returns, or was already journaled (then it is
        skipped and counted in ``duplicates``).
        """
        self._need_run()
        if intents.dtype != INTENT:
            raise TypeError(f"expected INTENT records, got {intents.dtype}")
        reports = _Reports()
        b = _Batch(reports)
        if self._in_doubt:
            self._retry_in_doubt(b)
        now = self._clock()
        intents = intents[self._fresh(intents)]
        n = len(intents)
        self.intents_processed += n
        if n == 0:  # all re-delivered
            self._commit(b)
            return reports.build(self._clock())

        reasons, lots = validate_intents(intents, self.lots)
        sym = np.where(reasons == 0, intents["symbol"], 0).astype(np.intp)
        side = intents["side"].astype(np.int64)
        otype = intents["order_type"]
        lot = self.lots[sym]
        qty = lots * lot
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
        host, pop, agent = (intents[f].tolist() for f in ("host", "population", "agent"))
        sym_l, seq_l, side_l = sym.tolist(), intents["seq"].tolist(), side.tolist()
        position, open_buy, open_sell = np.zeros(n), np.zeros(n), np.zeros(n)
        for i in np.flatnonzero(reasons == 0).tolist():
            key = (host[i], pop[i], agent[i], sym_l[i])
            position[i] = self.portfolio.position(key)
            e = self._exposure.get(key)
            if e:
                open_buy[i], open_sell[i] = e[0] * lot[i], e[1] * lot[i]
        reasons = self.risk.check(intents, qty, ref, position, open_buy, open_sell, reasons)

        raw_sym, otype_l, limit_l, created_l, lots_l, lot_l, reason_l = (
            intents["symbol"].tolist(), otype.tolist(), intents["limit_price"].tolist(),
            intents["created_ns"].tolist(), lots.tolist(), lot.tolist(), reasons.tolist(),
        )  # fmt: skip
        orders: list[IntentOrder] = []
        for i in range(n):
            o = IntentOrder(
                client_order_id=self.journal.intent_client_id(host[i], seq_l[i]),
                host=host[i], population=pop[i], agent=agent[i], intent_seq=seq_l[i],
                symbol=raw_sym[i], side=side_l[i], order_type=otype_l[i], qty_lots=lots_l[i],
                lot=lot_l[i], limit_price=_finite(limit_l[i]), created_ns=created_l[i],
            )  # fmt: skip
            if reason_l[i]:
                o.advance(_S.REJECTED)
                o.reason, o.reason_text = reason_l[i], _reject_text(reason_l[i], intents[i])
                reports.add(o, ReportKind.REJECT, reason=o.reason)
                self.rejects[RejectReason(o.reason)] += 1
            else:
                self._intents[o.client_order_id] = o
                self._expose(o, +1)
            orders.append(o)
        b.new_intents.extend(orders)

        live = np.flatnonzero(reasons == 0)
        market = live[otype[live] == OrderType.MARKET]
        fee_rate = self.config.internal_fee_bps / 1e4
        for net in net_market(sym[market], side[market], lots[market]):
            members = market[net.members]
            price = float(self.quotes.mid[net.symbol])
            allocs = []
            for i, internal, venue in zip(
                members.tolist(), net.internal.tolist(), net.venue.tolist(), strict=True
            ):
                o = orders[i]
                if internal:
                    self._accept(o, b)
                    fee = internal * o.lot * price * fee_rate
                    self._fill(o, internal, price, fee, "internal", now, b)
                if venue:
                    allocs.append(Allocation(o.client_order_id, venue))
            if net.venue_lots:
                self._new_venue_order(
                    net.symbol, int(net.side), OrderType.MARKET, net.venue_lots, 0.0, allocs,
                    now, b,
                )  # fmt: skip
        for i in live[otype[live] == OrderType.LIMIT].tolist():
            o = orders[i]
            alloc = [Allocation(o.client_order_id, o.qty_lots)]
            self._new_venue_order(
                o.symbol, o.side, OrderType.LIMIT, o.qty_lots, o.limit_price, alloc, now, b
            )
        to_send = list(b.new_venue)
        self._commit(b)  # commit #1: journaled before anything is sent
        for h, s in zip(host, seq_l, strict=True):
            if s > self._max_seq.get(h, -1):
                self._max_seq[h] = s

        for vo in to_send:
            self._send(vo, b)
        self._commit(b)  # commit #2: what the venue said
        return reports.build(self._clock())

    def _fresh(self, intents: np.ndarray) -> np.ndarray:
        """Mask of the intents not yet journaled in this epoch (first copy within the batch).

        Fast path: a host's seqs all above its high-water mark and increasing (a FIFO
        queue delivering new records) need no lookup; otherwise the journal is asked.
        """
        keep = np.ones(len(intents), bool)
        host = intents["host"]
        seq = intents["seq"].astype(np.int64)
        for h in np.unique(host).tolist():
            idx = np.flatnonzero(host == h)
            s = seq[idx]
            mark = self._max_seq.get(h, -1)
            if s[0] > mark and (len(s) == 1 or bool(np.all(s[1:] > s[:-1]))):
                continue
            old = self.journal.journaled_seqs(h, s[s <= mark].tolist())
            seen: set[int] = set()
            for j, q in zip(idx.tolist(), s.tolist(), strict=True):
                if q in old or q in seen:
                    keep[j] = False
                seen.add(q)
        self.duplicates += int((~keep).sum())
        return keep

    def _new_venue_order(
        self,
        symbol: int,
        side: int,
        order_type: int,
        lots: int,
        limit: float,
        allocs: list[Allocation],
        now: int,
        b: _Batch,
    ) -> None:
        seq, cid = self.journal.next_venue_order_id()
        vo = VenueOrder(
            client_order_id=cid, venue_seq=seq, symbol=symbol, side=side,
            order_type=order_type, qty_lots=lots, lot=float(self.lots[symbol]),
            limit_price=limit, created_ns=now, allocations=allocs,
        )  # fmt: skip
        self._venue_orders[cid] = vo
        b.new_venue.append(vo)

    def _send(self, vo: VenueOrder, b: _Batch) -> None:
        self._submitted(vo, b)
        request = OrderRequest(
            vo.client_order_id, vo.symbol, vo.side, vo.order_type, vo.qty, vo.limit_price
        )
        try:
            status = self.venue.submit(request)
        except Exception:
            # Sent or not, we cannot tell: stays SUBMITTED and is looked up later.
            log.exception("submit of %s failed; will reconcile", vo.client_order_id)
            self._in_doubt.add(vo.client_order_id)
            return
        self.venue_orders_sent += 1
        if status.duplicate:
            # The venue already has this id: it is the truth, never a reject.
            fetched = self.venue.fetch_order(vo.client_order_id)
            if fetched is None:
                self._in_doubt.add(vo.client_order_id)
                return
            status = fetched
        self._apply_status(vo, status, b)

    def _retry_in_doubt(self, b: _Batch) -> None:
        for cid in list(self._in_doubt):
            vo = self._venue_orders.get(cid)
            if vo is None:
                self._in_doubt.discard(cid)
                continue
            try:
                self._reconcile([vo], b)
            except Exception:
                log.exception("venue lookup of %s failed; still in doubt", cid)
                self._in_doubt.add(cid)

    # ---- market data --------------------------------------------------------------------

    def on_ticks(self, ticks: np.ndarray) -> dict[int, np.ndarray]:
        """Update quotes and marks; journal and report fills of resting orders."""
        self._need_run()
        self.quotes.update(ticks)
        fills = self.venue.on_ticks(ticks)
        if not (fills or self._in_doubt):
            return {}
        reports = _Reports()
        b = _Batch(reports)
        self._apply_fills(fills, b)
        if self._in_doubt:  # not only when intents arrive: a quiet engine settles them too
            self._retry_in_doubt(b)
        self._commit(b)
        return reports.build(self._clock())

    def cancel_all(self) -> dict[int, np.ndarray]:
        """Cancel every resting venue order (e.g. on halt); the reports for their intents."""
        self._need_run()
        reports = _Reports()
        b = _Batch(reports)
        for vo in list(self._venue_orders.values()):
            status = self.venue.cancel(vo.client_order_id)
            if status is not None:
                self._apply_status(vo, status, b)
        self._commit(b)
        return reports.build(self._clock())

    # ---- applying venue answers ---------------------------------------------------------

    def _apply_status(self, vo: VenueOrder, status: OrderStatus, b: _Batch) -> None:
        """Bring ``vo`` (and its intents) to the venue's ``status``; fills already journaled
        (by venue fill id) are skipped, so applying the same status twice changes nothing."""
        new_fills = self._unseen(status.fills, b)
        if vo.state == _S.NEW:
            self._submitted(vo, b)
        if status.state == _S.REJECTED and vo.state == _S.SUBMITTED and not new_fills:
            text = status.reason_text or "rejected by the venue"
            self._venue_rejected(vo, status.reason or RejectReason.VENUE, text, b)
            return
        if vo.state == _S.SUBMITTED:
            vo.advance(_S.ACCEPTED)
            b.touch(vo)
            for a in vo.allocations:
                o = self._intents[a.client_order_id]
                if o.state == _S.SUBMITTED:
                    self._accept(o, b)
        for f in new_fills:
            self._venue_fill(vo, f, b)
        if status.state in TERMINAL and round(status.filled_qty / vo.lot) != vo.filled_lots:
            # The venue is done with the order, yet its fills and ours disagree (fills we
            # never got, or ones it no longer has): positions differ from the venue's. Say
            # so loudly and close the order rather than leave it open forever.
            self.fill_mismatches += 1
            text = (
                f"venue reports {_S(status.state).name} with {status.filled_qty} filled, the "
                f"journal holds {vo.filled_qty}"
            )
            log.error("FILL MISMATCH on venue order %s: %s", vo.client_order_id, text)
            if not vo.is_terminal:
                self._venue_ended(vo, RejectReason.VENUE, text, b)
        if status.state in (_S.CANCELED, _S.REJECTED) and not vo.is_terminal:
            self._venue_ended(vo, status.reason, status.reason_text or "cancelled by the venue", b)

    def _apply_fills(self, fills: list[VenueFill], b: _Batch) -> None:
        for f in self._unseen(fills, b):
            vo = self._venue_orders.get(f.client_id)
            if vo is None or vo.is_terminal:
                log.warning(
                    "fill %s for unknown or finished order %s", f.venue_fill_id, f.client_id
                )
                self.unknown_fills += 1
                continue
            if vo.state in (_S.NEW, _S.SUBMITTED):  # the fill proves the venue has it
                self._apply_status(vo, OrderStatus(vo.client_order_id, _S.ACCEPTED), b)
            self._venue_fill(vo, f, b)

    def _unseen(self, fills: Sequence[VenueFill], b: _Batch) -> list[VenueFill]:
        if not fills:
            return []
        # Keyed per venue order: fill ids are only unique per order at some venues.
        known = self.journal.known_venue_fill_ids((f.client_id, f.venue_fill_id) for f in fills)
        known |= b.venue_fill_ids
        return [f for f in fills if (f.client_id, f.venue_fill_id) not in known]

    def _venue_fill(self, vo: VenueOrder, f: VenueFill, b: _Batch) -> None:
        lots = round(f.qty / vo.lot)
        if not 0 < lots <= vo.qty_lots - vo.filled_lots:
            raise RuntimeError(
                f"venue fill {f.venue_fill_id} of {f.qty} does not fit order "
                f"{vo.client_order_id} ({vo.filled_qty} of {vo.qty} filled)"
            )
        vo.filled_lots += lots
        vo.notional += lots * vo.lot * f.price
        vo.advance(_S.FILLED if vo.filled_lots == vo.qty_lots else _S.PARTIALLY_FILLED)
        b.touch(vo)
        b.venue_fills.append(f)
        b.venue_fill_ids.add((f.client_id, f.venue_fill_id))
        shares = pro_rata(lots, [a.remaining_lots for a in vo.allocations])
        for a, share in zip(vo.allocations, shares.tolist(), strict=True):
            if share:
                a.filled_lots += share
                o = self._intents[a.client_order_id]
                fee = f.fee * share / lots  # fees split pro rata (float)
                self._fill(
                    o, share, f.price, fee, "venue", f.ts_ns, b, vo.client_order_id, f.venue_fill_id
                )

    def _venue_rejected(self, vo: VenueOrder, reason: int, text: str, b: _Batch) -> None:
        vo.advance(_S.REJECTED)
        vo.reason, vo.reason_text = int(reason), text
        b.touch(vo)
        self._release(vo, reason, text, b)

    def _venue_ended(self, vo: VenueOrder, reason: int, text: str, b: _Batch) -> None:
        """The venue order is over with quantity left (IOC remainder, cancel, loss)."""
        vo.advance(_S.CANCELED)
        vo.reason, vo.reason_text = int(reason), text
        b.touch(vo)
        self._release(vo, reason, text, b)

    def _release(self, vo: VenueOrder, reason: int, text: str, b: _Batch) -> None:
        """The unfilled shares of a finished venue order are void for their intents."""
        for a in vo.allocations:
            o = self._intents.get(a.client_order_id)
            if a.remaining_lots and o is not None and not o.is_terminal:
                self._void(o, reason, text, b)

    # ---- intent order changes (each keeps exposure, journal batch and reports in step) --

    def _submitted(self, vo: VenueOrder, b: _Batch) -> None:
        vo.advance(_S.SUBMITTED)
        b.touch(vo)
        for a in vo.allocations:
            o = self._intents[a.client_order_id]
            if o.state == _S.NEW:
                o.advance(_S.SUBMITTED)
                b.touch(o)

    def _accept(self, o: IntentOrder, b: _Batch) -> None:
        o.advance(_S.ACCEPTED)
        b.touch(o)
        b.reports.add(o, ReportKind.ACK)

    def _fill(
        self,
        o: IntentOrder,
        lots: int,
        price: float,
        fee: float,
        liquidity: str,
        ts_ns: int,
        b: _Batch,
        venue_order_id: str | None = None,
        venue_fill_id: str | None = None,
    ) -> None:
        self._expose(o, -1)
        o.filled_lots += lots
        o.notional += lots * o.lot * price
        o.advance(_S.FILLED if o.filled_lots == o.qty_lots else _S.PARTIALLY_FILLED)
        self._expose(o, +1)
        b.touch(o)
        b.fills.append(
            Fill(
                o.client_order_id, o.host, o.population, o.agent, o.symbol, o.side, lots,
                o.lot, price, fee, liquidity, ts_ns, venue_order_id, venue_fill_id,
            )
        )  # fmt: skip
        b.reports.add(o, ReportKind.FILL, lots * o.lot, price, fee)

    def _void(self, o: IntentOrder, reason: int, text: str, b: _Batch) -> None:
        """End an intent with its remainder unfilled: REJECTED if nothing ever happened to
        it, else CANCELED (the agent keeps what filled)."""
        self._expose(o, -1)
        rejected = o.state in (_S.NEW, _S.SUBMITTED)
        o.advance(_S.REJECTED if rejected else _S.CANCELED)
        o.reason, o.reason_text = int(reason), text
        b.touch(o)
        if rejected:
            self.rejects[RejectReason(reason or RejectReason.VENUE)] += 1
            b.reports.add(o, ReportKind.REJECT, reason=reason or RejectReason.VENUE)
        else:
            b.reports.add(o, ReportKind.CANCEL)

    def _expose(self, o: IntentOrder, sign: int) -> None:
        r = o.remaining_lots
        if r:
            e = self._exposure.setdefault(o.key, [0, 0])
            e[0 if o.side > 0 else 1] += sign * r

    def _commit(self, b: _Batch) -> None:
        """Journal the batch, then (and only then) apply its fills to the portfolio."""
        if not (b.new_intents or b.new_venue or b.intents or b.venue or b.fills):
            return
        self.journal.write(
            new_intents=b.new_intents,
            intent_updates=[o for o in b.intents.values() if o.steps],
            new_venue_orders=b.new_venue,
            venue_updates=[v for v in b.venue.values() if v.steps],
            venue_fills=b.venue_fills,
            fills=b.fills,
            now_ns=self._clock(),
        )
        self.portfolio.apply_all(b.fills)  # same fills, same order as the journal's fill_id
        for o in (*b.new_intents, *b.intents.values()):
            if o.is_terminal:
                self._intents.pop(o.client_order_id, None)
        for v in (*b.new_venue, *b.venue.values()):
            if v.is_terminal:
                self._venue_orders.pop(v.client_order_id, None)
                self._in_doubt.discard(v.client_order_id)
        b.new_intents, b.new_venue, b.venue_fills, b.fills = [], [], [], []
        b.intents, b.venue = {}, {}

    def _need_run(self) -> None:
        if not self._recovered:
            raise RuntimeError("call recover() before using the engine")

    # ---- stop and status ----------------------------------------------------------------

    def record_drained(self, host_seqs: Mapping[int, int]) -> None:
        """Clean stop: per host, the intent queue head (records ever pushed, one past the
        last seq) up to which this run drained, stored with the run."""
        self.journal.record_drained(host_seqs, self._clock())

    def close(self) -> None:
        self.journal.close()
        self.venue.close()

    def positions(self) -> dict[Key, float]:
        """Non-flat positions per (host, population, agent, symbol), base units."""
        return self.portfolio.positions()

    @property
    def fills_count(self) -> int:
        return self.portfolio.fill_count

    @property
    def open_orders(self) -> int:
        return len(self._intents)

    def status(self) -> dict[str, Any]:
        """Counters and PnL for a status line (JSON-friendly)."""
        totals = self.portfolio.totals(self.quotes.mid)
        return {
            "run_id": self.journal.run_id,
            "trading": self.risk.state.value,
            "intents": self.intents_processed,
            "duplicates": self.duplicates,
            "fills": self.fills_count,
            "open_orders": self.open_orders,
            "venue_orders": self.venue_orders_sent,
            "in_doubt": len(self._in_doubt),
            "fill_mismatches": self.fill_mismatches,
            "rejects": {r.name: n for r, n in sorted(self.rejects.items())},
            "realized": totals.realized,
            "unrealized": totals.unrealized,
            "fees": totals.fees,
        }


def _is_venue_id(cid: str) -> bool:
    run, _, n = cid.partition("-v")
    return run.isdigit() and n.isdigit()


def _finite(x: float) -> float:
    """SQLite stores NaN as NULL; keep garbage from a rejected intent storable."""
    return x if np.isfinite(x) else 0.0


def _reject_text(reason: int, r: np.void) -> str:
    return (
        f"{RejectReason(reason).name}: qty={float(r['qty'])!r} side={int(r['side'])} "
        f"type={int(r['order_type'])} limit={float(r['limit_price'])!r} "
        f"symbol={int(r['symbol'])}"
    )

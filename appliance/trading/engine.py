"""ExecutionEngine: validate, risk-check, journal, cross, send, cancel, journal, report.

One ``process`` call handles one batch of intents from every host:

1. drop intents already journaled in this epoch (re-delivery after a consumer crash);
2. the pre-trade checks (pretrade.py): validation, per-symbol limits per agent, the
   trading state, priority conflicts, the account's limits;
3. route per symbol (routing.py): intents cross internally by the symbol's policy, the
   rest becomes venue orders (crossing a resting quote withdraws it from the venue first);
4. commit #1: every intent (NEW, or REJECTED with its reason), the internal fills and every
   venue order about to be sent, with the intents it covers. Nothing has been sent yet;
5. send the venue orders, then carry out the batch's CANCEL intents (cancels.py);
6. the drawdown kill switch (switch.py), which may move trading to reduce-only or halted;
7. commit #2: acks, rejects, fills (each venue fill split pro rata over the intents it
   covers), cancels; then update the portfolio and return the reports, grouped by host.

Reports are built only from committed state, so whatever an agent was told survives a
crash. A crash between 4 and 7 is repaired by ``recover`` (see recovery.py). The pieces:
the open orders live in an ``OpenOrders``; every change to them is made and journaled
through a ``Batch``; ``Recovery`` settles them with the venue at the start of a run and
when a submit's outcome is unknown; ``TradingControl`` holds and journals the trading state,
``TradingSwitch`` carries out what a change of it means for the resting orders.

A journal error (disk full, a row in an unexpected state) propagates and leaves the
engine unusable: the process must exit and ``recover`` from the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec
import numpy as np

from appliance.model.enums import TradingState
from appliance.model.orders import IntentOrder, OrderState, VenueOrder
from appliance.model.records import INTENT, OrderType, RejectReason
from appliance.model.universe import Universe
from appliance.storage.sqlite import storage_failure
from appliance.trading import cancels
from appliance.trading.account import AccountLimits
from appliance.trading.batch import Batch, Counters
from appliance.trading.checkpoint import EVERY_FILLS, PositionsCheckpoint
from appliance.trading.control import TradingControl
from appliance.trading.journal import Journal
from appliance.trading.open_orders import OpenOrders
from appliance.trading.portfolio import Key, Portfolio
from appliance.trading.pretrade import Checked, PreTrade
from appliance.trading.recovery import Recovery, RecoverySummary
from appliance.trading.reports import merge
from appliance.trading.risk import RiskEngine, RiskLimits
from appliance.trading.routing import Policy, Routed, Router
from appliance.trading.seen import Seen
from appliance.trading.switch import TradingSwitch
from appliance.venues.base import OrderRequest, QuoteBook, Venue

log = logging.getLogger(__name__)

__all__ = ["EngineConfig", "EngineStatus", "ExecutionEngine", "Rules"]

_PASS = RejectReason.NONE


@dataclass(frozen=True)
class EngineConfig:
    internal_fee_bps: float = 0.0  # charged to both sides of an internal cross
    checkpoint_fills: int = EVERY_FILLS  # positions checkpoint at least every so many fills


@dataclass(frozen=True)
class Rules:
    """Everything pre-trade that may change while the engine runs (a config reload)."""

    limits: Mapping[str, RiskLimits]  # per symbol, applied per agent
    account: AccountLimits = field(default_factory=AccountLimits)
    policies: Mapping[str, Policy] = field(default_factory=dict)  # per symbol; default net
    priorities: Mapping[tuple[int, int], int] = field(default_factory=dict)  # (host, pop)
    priority_window_s: float = 1.0


class ExecutionEngine:
    """The execution side's logic, drivable in one process.

    ``universe`` is the instrument table (an intent's ``symbol`` is an index into it) and
    the agent layout, recorded with the run and checked against open positions at
    ``recover`` (a universe without agents: agents not checked). The engine owns
    ``journal`` and ``venue`` (``close`` closes both). Call ``recover`` once before anything
    else.
    """

    def __init__(
        self,
        universe: Universe,
        limits: RiskLimits | Mapping[str, RiskLimits],
        journal: Journal,
        venue: Venue,
        config: EngineConfig | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config or EngineConfig()
        self.universe = universe
        self.symbols = list(universe.symbols)
        self.agents = None if universe.agents is None else universe.agents.counts
        self.lots = universe.lots
        self.journal = journal
        self.venue = venue
        self.quotes = QuoteBook(len(self.symbols))
        self.portfolio = Portfolio()
        self.book = OpenOrders()
        self.counters = Counters()
        self.pretrade = PreTrade(
            self.symbols, limits, self.lots, self.quotes, self.portfolio, self.book
        )
        fee_rate = self.config.internal_fee_bps / 1e4
        self.router = Router(self.book, venue, journal, self.quotes, self.lots, fee_rate)
        self.control = TradingControl(self.pretrade.risk, journal, clock)
        self.rules = Rules({s: self.risk.limits(s) for s in self.symbols})
        self._switch = TradingSwitch(
            self.control, self.pretrade.account, self.portfolio, self.quotes, self.book, venue
        )
        self._recovery = Recovery(journal, venue, self.book)
        self._checkpoint = PositionsCheckpoint(
            journal, self.portfolio, self.config.checkpoint_fills, clock
        )
        self._clock = clock
        self._seen = Seen(journal, {})
        self._recovered = False

    @property
    def risk(self) -> RiskEngine:
        return self.pretrade.risk

    def set_rules(self, rules: Rules) -> None:
        """Apply ``rules`` from the next batch on (limits, policies, priorities)."""
        index = {s: i for i, s in enumerate(self.symbols)}
        unknown = sorted(set(rules.policies) - set(index))
        if unknown:
            raise ValueError(f"netting policies for unknown symbols {unknown}")
        self.risk.set_limits(rules.limits)
        self.pretrade.account.set_limits(rules.account)
        self.router.set_policies({index[s]: p for s, p in rules.policies.items()})
        self.pretrade.window.configure(int(rules.priority_window_s * 1e9), rules.priorities)
        self.rules = rules

    def set_trading_state(
        self, state: TradingState | str, who: str = "config", why: str = "config trading.state"
    ) -> dict[int, np.ndarray]:
        """Change the trading state (journaled with ``who`` and ``why``); entering halted
        or reduce-only cancels every resting order: their reports per host."""
        if not self._recovered:  # journaled when the run begins
            self.control.set(state, who, why)
            return {}
        b = self._batch()
        self._switch.change(TradingState(state), who, why, b)
        b.commit()
        return b.reports.build(self._clock())

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
        and that are delivered again are recognised as duplicates, and the trading state
        it journaled last is taken up again.

        Raises LayoutMismatch, with nothing written, if the symbols, lots or agents
        contradict positions open in the journal (see layout_check.py).
        """
        if self._recovered:
            raise RuntimeError("recover() runs once per engine")
        self.pretrade.prime()  # before the run, so within a worker's start-up allowance
        self._recovery.check_layout(self.universe)  # before anything is written
        # From here a failure leaves the engine unusable: the process exits, and recovers.
        self._recovered = True
        summary = self._recovery.start(epoch, self.universe, self._checkpoint, self._batch())
        self.control.start(summary.epoch)
        self._seen = Seen(self.journal, summary.last_intent_seq)
        # CANCEL intents journaled but not carried out before the crash: do it now.
        pending = [o for o in self.book.intents.values() if o.order_type == OrderType.CANCEL]
        if pending:
            b = self._batch()
            cancels.carry_out(pending, self.book, self.venue, b)
            b.commit()
            summary.reports.update(merge(summary.reports, b.reports.build(self._clock())))
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
        todo: list[IntentOrder] = []
        if len(intents):
            c = self.pretrade.check(intents, now, self._priority_symbols())
            orders = self._take(intents, c, b)
            ok = c.reasons == _PASS
            cancel = c.order_type == OrderType.CANCEL
            todo = [orders[i] for i in np.flatnonzero(ok & cancel).tolist()]
            live = np.flatnonzero(ok & ~cancel)
            withdrawn = frozenset((o.key, o.side) for o in todo)
            routed = Routed([orders[i] for i in live.tolist()], c.price[live], withdrawn)
            self.router.route(routed, now, b)
        to_send = list(b.new_venue)
        b.commit()  # commit #1: journaled before anything is sent
        self._seen.journaled(intents)
        for vo in to_send:
            self._send(vo, b)
        cancels.carry_out(todo, self.book, self.venue, b)
        self._switch.kill_switch(b)
        b.commit()  # commit #2: what the venue said
        self._checkpoint_if_due()
        return b.reports.build(self._clock())

    def _priority_symbols(self) -> set[int]:
        return {s for s, p in self.router.policies.items() if p is Policy.PRIORITY}

    def _take(self, intents: np.ndarray, c: Checked, b: Batch) -> list[IntentOrder]:
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
                o.reason = reason[i]
                o.reason_text = c.texts.get(i) or _reject_text(reason[i], intents[i])
            orders.append(o)
        b.add_intents(orders)
        return orders

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

    # ---- market data, cancels, kill switch -------------------------------------------------

    def on_ticks(self, ticks: np.ndarray) -> dict[int, np.ndarray]:
        """Update quotes and marks; journal and report fills of resting orders."""
        self._need_run()
        self.quotes.update(ticks)
        fills = self.venue.on_ticks(ticks)
        b = self._batch()
        b.apply_fills(fills)
        b.apply_ended(self.venue.ended())
        if self.book.in_doubt:  # not only when intents arrive: a quiet engine settles them too
            self._recovery.retry_in_doubt(b)
        self._switch.kill_switch(b)
        b.commit()
        self._checkpoint_if_due()
        return b.reports.build(self._clock())

    def cancel_all(self) -> dict[int, np.ndarray]:
        """Cancel every resting venue order (e.g. on halt); the reports for their intents."""
        self._need_run()
        b = self._batch()
        self._switch.cancel_resting(b, f"cancelled: trading {self.control.state.value}")
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

    def status(self) -> EngineStatus:
        """Counters and PnL for a status line."""
        totals = self.portfolio.totals(self.quotes.mid)
        c = self.counters
        return EngineStatus(
            run_id=self.journal.run_id,
            trading=self.control.state.value,
            trading_why=self.control.describe(),
            intents=c.intents_processed,
            duplicates=c.duplicates,
            fills=self.portfolio.fill_count,
            open_orders=self.open_orders,
            venue_orders=c.venue_orders_sent,
            in_doubt=len(self.book.in_doubt),
            fill_mismatches=c.fill_mismatches,
            unknown_fills=c.unknown_fills,
            rejects={r.name: n for r, n in sorted(c.rejects.items())},
            realized=totals.realized,
            unrealized=totals.unrealized,
            fees=totals.fees,
        )


class EngineStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What execution tells the supervisor for the status line (runtime/messages.Status):
    its counters since this start, the trading state and why, the positions' PnL."""

    run_id: int | None = None
    trading: str = TradingState.ACTIVE.value
    trading_why: str = ""
    intents: int = 0  # taken and journaled
    duplicates: int = 0
    fills: int = 0
    open_orders: int = 0
    venue_orders: int = 0
    in_doubt: int = 0
    fill_mismatches: int = 0
    unknown_fills: int = 0
    rejects: dict[str, int] = {}  # by RejectReason name
    realized: float = 0.0
    unrealized: float = 0.0
    fees: float = 0.0
    takes_intents: bool = True  # False while storage is failing (storage_halt.py)


def _finite(x: float) -> float:
    """SQLite stores NaN as NULL; keep garbage from a rejected intent storable."""
    return x if np.isfinite(x) else 0.0


def _reject_text(reason: int, r: np.void) -> str:
    return (
        f"{RejectReason(reason).name}: qty={float(r['qty'])!r} side={int(r['side'])} "
        f"type={int(r['order_type'])} limit={float(r['limit_price'])!r} "
        f"symbol={int(r['symbol'])}"
    )

"""Intents a crashed appliance left queued: journaled as rejected, never executed.

Execution journals an intent before it releases it from its queue, and the queues outlive
every worker, so when the whole appliance dies (its supervisor with it) the intent queues
hold exactly the intents that were published and never journaled, plus any that were
journaled but not yet released. The next start hands them here before it reclaims the
queues: each one the journal lacks in its epoch becomes an intent order REJECTED with
STALE_AFTER_CRASH. None is executed: the market it was decided on is gone, and the agent
that sent it is not waiting for an answer any more. The audit trail then has no hole:
every published intent of the epoch is in the journal exactly once.

A stop that could not drain (execution halted by a full disk) leaves its intent queues
holding intents for the same reason, and they take the same path: the intents are just as
stale at the next start, and one reason keeps every audit of the journal the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.model.orders import IntentOrder, OrderState
from appliance.model.records import INTENT, RejectReason
from appliance.trading.journal import Journal
from appliance.trading.risk import validate_intents

log = logging.getLogger(__name__)

REASON = RejectReason.STALE_AFTER_CRASH


@dataclass(frozen=True)
class StaleSummary:
    epoch: str
    run_id: int
    queued: int  # intents found in the queues
    journaled: int  # of those, journaled now as stale
    already: int  # of those, journaled before the crash (not yet released from the queue)
    heads: dict[int, int]  # per host: every intent below is in the journal now

    def __str__(self) -> str:
        return (
            f"epoch {self.epoch} (run {self.run_id}): {self.queued} intents left queued, "
            f"{self.journaled} journaled as {REASON.name}, {self.already} journaled before; "
            f"intent queue heads {self.heads}"
        )


def journal_stale(
    journal: Journal,
    epoch: str,
    queued: Mapping[int, np.ndarray],
    heads: Mapping[int, int],
    lots: Sequence[float],
    now_ns: int,
) -> StaleSummary:
    """Journal ``queued`` (INTENT records per host, as the queues of ``epoch`` hold them)
    as stale rejects, except those the journal already holds, in one transaction; then
    record ``heads`` (per host, records ever pushed) as journaled-up-to for that epoch.

    Idempotent: a second call with the same queues journals nothing more."""
    run_id = journal.adopt_epoch(epoch, now_ns)
    lot_sizes = np.asarray(lots, float)
    orders: list[IntentOrder] = []
    already = 0
    for host, intents in sorted(queued.items()):
        if intents.dtype != INTENT:
            raise TypeError(f"expected INTENT records, got {intents.dtype}")
        known = journal.reads.journaled_seqs(epoch, host, intents["seq"].tolist())
        fresh = intents[~np.isin(intents["seq"], list(known))]
        already += len(intents) - len(fresh)
        orders += _orders(journal, host, fresh, lot_sizes, epoch)
    journal.write(new_intents=orders, now_ns=now_ns)
    journal.record_drained(heads, now_ns, clean=False)
    return StaleSummary(
        epoch, run_id, sum(len(q) for q in queued.values()), len(orders), already, dict(heads)
    )


def _orders(
    journal: Journal, host: int, intents: np.ndarray, lot_sizes: np.ndarray, epoch: str
) -> list[IntentOrder]:
    """Stale rejects of ``intents`` from ``host``'s queue (the queue names the host: its
    records' own host field is the sender's word for it)."""
    # The quantity on the lot grid as the engine would have taken it (0 where invalid:
    # garbage is stored as the engine stores a BAD_ORDER reject).
    _, lots = validate_intents(intents, lot_sizes)
    sym = intents["symbol"].astype(np.intp)
    lot = lot_sizes[np.where(sym < len(lot_sizes), sym, 0)]
    text = (
        f"{REASON.name}: still queued when the appliance (epoch {epoch}) crashed or stopped "
        "undrained; never executed"
    )
    out = []
    for i, r in enumerate(intents):
        limit = float(r["limit_price"])
        o = IntentOrder(
            client_order_id=journal.intent_client_id(host, int(r["seq"])),
            host=host, population=int(r["population"]), agent=int(r["agent"]),
            intent_seq=int(r["seq"]), symbol=int(r["symbol"]), side=int(r["side"]),
            order_type=int(r["order_type"]), qty_lots=int(lots[i]), lot=float(lot[i]),
            limit_price=limit if np.isfinite(limit) else 0.0, created_ns=int(r["created_ns"]),
        )  # fmt: skip
        o.advance(OrderState.REJECTED)
        o.reason, o.reason_text = int(REASON), text
        out.append(o)
    return out

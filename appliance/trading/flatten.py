"""Flattening: execution closes every agent's position itself (`dynamind flatten`).

The engine goes reduce-only (only orders that shrink a position pass; resting orders are
cancelled), then every open position gets a MARKET intent the other way, processed like
any intent: risk-checked, netted (agents on opposite sides cross internally), journaled,
sent. These intents are the operator's, not an agent's: they carry the agent's host,
population and agent (the position they close is that agent's), and seqs from a range no
agent host reaches (from FLATTEN_SEQ, 2**62), so their identity never meets a queued
intent's. Their reports are not pushed to the hosts: the caller has the hosts reload
their positions instead (an agent has no intent of its own to match them with).

A round closes what the market lets it: an order larger than the symbol's
max_order_notional goes in several, and what found no liquidity is tried again next round.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.records import INTENT, OrderType, Side
from appliance.trading.engine import ExecutionEngine
from appliance.trading.reports import merge

FLATTEN_SEQ = 2**62  # above any queue position a host will reach; below SQLite's 2**63


@dataclass(frozen=True)
class FlattenRound:
    cancel_reports: dict[int, np.ndarray]  # resting orders cancelled: push these as usual
    closing: int  # closing intents processed (journaled) this round
    open_after: int  # positions still open after it
    # The closing intents' reports: for the metrics and counters, never for the hosts.
    closing_reports: dict[int, np.ndarray]


def closing_intents(engine: ExecutionEngine, now_ns: int) -> np.ndarray:
    """One or more MARKET intents per open position, each within max_order_notional."""
    positions = engine.positions()
    journaled = engine.journal.reads.max_intent_seqs(engine.journal.epoch)
    next_seq = {h: max(s + 1, FLATTEN_SEQ) for h, s in journaled.items()}
    rows = []
    for (host, pop, agent, sym), qty in sorted(positions.items()):
        lot = float(engine.lots[sym])
        lots = round(abs(qty) / lot)
        chunk = _chunk_lots(engine, sym, lot, lots)
        while lots > 0:
            take = min(lots, chunk)
            seq = next_seq.get(host, FLATTEN_SEQ)
            next_seq[host] = seq + 1
            side = Side.SELL if qty > 0 else Side.BUY
            rows.append((seq, host, pop, agent, sym, side, take * lot))
            lots -= take
    out = np.zeros(len(rows), INTENT)
    for i, (seq, host, pop, agent, sym, side, q) in enumerate(rows):
        out[i]["seq"], out[i]["host"], out[i]["population"] = seq, host, pop
        out[i]["agent"], out[i]["symbol"], out[i]["side"], out[i]["qty"] = agent, sym, side, q
    out["order_type"] = OrderType.MARKET
    out["created_ns"] = out["tick_ns"] = now_ns
    return out


def _chunk_lots(engine: ExecutionEngine, sym: int, lot: float, lots: int) -> int:
    """Most lots one order may carry under the symbol's max_order_notional (at least 1)."""
    price = max(float(engine.quotes.ask[sym]), float(engine.quotes.bid[sym]))
    limit = engine.risk.limits(engine.symbols[sym]).max_order_notional
    if not math.isfinite(price) or price <= 0:
        return lots  # no quote: the order is rejected NO_MARKET, and tried again next round
    return max(1, int(limit / (price * lot) * (1 - 1e-9)))


def flatten_round(engine: ExecutionEngine, who: str) -> FlattenRound:
    """Reduce-only, cancel resting orders, send closing orders for what is open; the
    state change is journaled as ``who``'s."""
    why = f"dynamind flatten at {time.strftime('%H:%M:%S')}"
    first = engine.set_trading_state(TradingState.REDUCE_ONLY, who, why)
    cancels = merge(first, engine.cancel_all())
    intents = closing_intents(engine, time.time_ns())
    closing = engine.process(intents) if len(intents) else {}  # journaled before it returns
    return FlattenRound(cancels, len(intents), len(engine.positions()), closing)

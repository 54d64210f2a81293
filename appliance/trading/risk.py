"""Pre-trade checks of one symbol and one agent at a time, vectorised over a batch.

``validate_intents`` rejects what is malformed (BAD_ORDER, UNKNOWN_SYMBOL) and puts every
quantity on the symbol's lot grid. ``RiskEngine.check`` then applies the trading state and
the limits of each intent's symbol to the agent that sent it. Both return one RejectReason
code per intent (0 = passes), so the engine can journal every intent with its reason in
the same transaction. The checks across the whole account (gross exposure, order rates,
drawdown) are in account.py.

A CANCEL intent never trades: validation checks only its side and symbol, and no limit
or trading state applies to it (see records.OrderType.CANCEL).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.records import INTENT, OrderType, RejectReason, Side

# Float noise allowed when flooring qty / lot (0.3 / 0.1 is 2.9999999999999996 lots).
_LOT_EPS = 1e-9
# Relative slack on limit comparisons: positions are sums of lot-grid floats.
_REL_EPS = 1e-9
BPS = 1e-4


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits of one symbol, each applied to every agent on its own."""

    max_position: float  # |position| of one agent, base units, open orders included
    max_order_notional: float  # qty * reference price of one intent, quote currency
    max_order_qty: float = math.inf  # qty of one intent, base units
    # Largest distance of an intent's own price from the last mid, in basis points of the
    # mid (fat-finger guard); a finite band needs a known mid.
    price_band_bps: float = math.inf
    max_open_orders: float = math.inf  # open intents of one agent in the symbol

    def __post_init__(self) -> None:
        if not all(getattr(self, f.name) >= 0 for f in fields(self)):
            raise ValueError(f"risk limits must be >= 0: {self}")


class Exposure(NamedTuple):
    """What the checks need to know about each intent, as arrays aligned per intent."""

    qty: np.ndarray  # quantity in base units, on the lot grid
    ref_price: np.ndarray  # the highest price it can trade at, which values it (NaN: none)
    price: np.ndarray  # its own price: the limit, or the quote a market order takes
    mid: np.ndarray  # the symbol's last mid (NaN: unknown)
    position: np.ndarray  # the agent's position in the symbol
    open_buy: np.ndarray  # unfilled quantity of the agent's open buys in the symbol
    open_sell: np.ndarray  # ... and of its open sells
    open_orders: np.ndarray  # the agent's open intents in the symbol


def validate_intents(intents: np.ndarray, lot_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reasons uint8, lots int64) per intent.

    lots is qty floored onto the symbol's lot grid (0 where rejected, and for CANCEL): a
    quantity below one lot, non-finite quantity, side other than BUY/SELL, unknown order
    type or a LIMIT without a positive finite price is BAD_ORDER; a symbol index beyond
    ``lot_sizes`` is UNKNOWN_SYMBOL. A CANCEL needs only a good side and symbol.
    """
    if intents.dtype != INTENT:
        raise TypeError(f"expected INTENT records, got {intents.dtype}")
    n_symbols = len(lot_sizes)
    sym = intents["symbol"].astype(np.intp)
    reasons = np.zeros(len(intents), np.uint8)
    unknown = sym >= n_symbols
    reasons[unknown] = RejectReason.UNKNOWN_SYMBOL
    lot = lot_sizes[np.where(unknown, 0, sym)]
    qty, limit = intents["qty"], intents["limit_price"]
    otype, side = intents["order_type"], intents["side"]
    cancel = otype == OrderType.CANCEL
    with np.errstate(invalid="ignore", over="ignore"):
        raw = np.floor(qty / lot + _LOT_EPS)
        sized = np.isfinite(raw) & (raw >= 1) & (raw < 2**53)
        good = ((side == Side.BUY) | (side == Side.SELL)) & (
            cancel
            | (sized & (otype == OrderType.MARKET))
            | (sized & (otype == OrderType.LIMIT) & np.isfinite(limit) & (limit > 0))
        )
    reasons[~good & (reasons == RejectReason.NONE)] = RejectReason.BAD_ORDER
    lots = np.where((reasons == RejectReason.NONE) & ~cancel, raw, 0).astype(np.int64)
    return reasons, lots


class RiskEngine:
    """Per-symbol limits, applied per agent, and the trading state."""

    def __init__(
        self, symbols: Sequence[str], limits: RiskLimits | Mapping[str, RiskLimits]
    ) -> None:
        self.symbols = list(symbols)
        self.state = TradingState.ACTIVE
        self._limits: dict[str, RiskLimits] = {}
        self._caps = np.zeros((len(fields(RiskLimits)), len(self.symbols)))
        self.set_limits(limits)

    def set_limits(self, limits: RiskLimits | Mapping[str, RiskLimits]) -> None:
        """Replace the limits; every symbol needs one (no silent 'unlimited' default)."""
        if isinstance(limits, RiskLimits):
            limits = dict.fromkeys(self.symbols, limits)
        missing = [s for s in self.symbols if s not in limits]
        if missing:
            raise ValueError(f"no risk limits for symbols {missing}")
        self._limits = {s: limits[s] for s in self.symbols}
        # One row per limit (field order), one column per symbol: indexed per intent.
        self._caps = np.array(
            [[getattr(limits[s], f.name) for s in self.symbols] for f in fields(RiskLimits)],
            float,
        ).reshape(len(fields(RiskLimits)), len(self.symbols))

    def limits(self, symbol: str) -> RiskLimits:
        return self._limits[symbol]

    def set_state(self, state: TradingState | str) -> None:
        self.state = TradingState(state)

    def check(
        self, intents: np.ndarray, x: Exposure, prior: np.ndarray | None = None
    ) -> np.ndarray:
        """RejectReason per intent (uint8, 0 = passes).

        ``prior`` carries earlier rejects (validation), which are kept and not checked
        again. In order: trading state (HALTED), a market to value the intent at
        (NO_MARKET), MAX_ORDER_QTY, MAX_NOTIONAL, PRICE_BAND, position (MAX_POSITION, or
        REDUCE_ONLY while reduce-only), MAX_OPEN_ORDERS.

        Position check, per agent, symbol and side: current position + open quantity on
        that side + this intent + every earlier intent of the batch on that side that
        passes must stay within max_position (conservative: open orders are assumed to
        fill, crosses are not netted). Earlier intents of the same agent in the batch are
        accepted first, so the result equals checking the batch one intent at a time; the
        open-order count works the same way.
        """
        n = len(intents)
        out = np.zeros(n, np.uint8) if prior is None else np.array(prior, np.uint8)
        live = (out == RejectReason.NONE) & (intents["order_type"] != OrderType.CANCEL)
        if not live.any():
            return out
        if self.state is TradingState.HALTED:
            out[live] = RejectReason.HALTED
            return out
        sym = np.where(live, intents["symbol"], 0).astype(np.intp)
        side = intents["side"].astype(np.int64)
        pos_cap, notional_cap, qty_cap, band, open_cap = self._caps[:, sym]

        def reject(mask: np.ndarray, reason: RejectReason) -> None:
            nonlocal live
            mask = live & mask
            out[mask] = reason
            live = live & ~mask

        with np.errstate(invalid="ignore"):
            # NaN compares False: no quote, or (with a band to keep) no mid.
            reject(~(x.ref_price > 0) | (np.isfinite(band) & ~(x.mid > 0)), RejectReason.NO_MARKET)
            reject(x.qty > qty_cap * (1 + _REL_EPS), RejectReason.MAX_ORDER_QTY)
            reject(x.qty * x.ref_price > notional_cap * (1 + _REL_EPS), RejectReason.MAX_NOTIONAL)
            off = np.abs(x.price - x.mid)
            reject(off > band * BPS * x.mid * (1 + _REL_EPS), RejectReason.PRICE_BAND)

        # Exposure in the intent's own direction before it: long exposure for a buy,
        # short exposure for a sell. Reduce-only caps it at zero (may shrink, not grow).
        reduce_only = self.state is TradingState.REDUCE_ONLY
        base = np.where(side > 0, x.position + x.open_buy, x.open_sell - x.position)
        cap = np.zeros(n) if reduce_only else pos_cap
        keys = (intents["host"], intents["population"], intents["agent"], sym, side)
        over = _beyond_cap(keys, np.flatnonzero(live), x.qty, base, cap)
        out[over] = RejectReason.REDUCE_ONLY if reduce_only else RejectReason.MAX_POSITION
        live[over] = False
        # Open orders: one more per intent, per agent and symbol whatever the side.
        one = np.ones(n)
        over = _beyond_cap(keys[:4], np.flatnonzero(live), one, x.open_orders.astype(float),
                           open_cap)  # fmt: skip
        out[over] = RejectReason.MAX_OPEN_ORDERS
        return out


def _beyond_cap(
    keys: tuple[np.ndarray, ...],
    idx: np.ndarray,
    qty: np.ndarray,
    base: np.ndarray,
    cap: np.ndarray,
) -> np.ndarray:
    """The intents among ``idx`` that would take their group (same values in every
    array of ``keys``) beyond ``cap``: ``base`` plus the quantity of the group's earlier
    intents that pass (batch order) plus their own."""
    if idx.size == 0:
        return np.zeros(0, np.intp)
    order = idx[np.lexsort((idx, *(k[idx] for k in reversed(keys))))]
    first = np.zeros(order.size, bool)  # first intent of each group
    first[0] = True
    for col in keys:
        c = col[order]
        first[1:] |= c[1:] != c[:-1]
    group = np.cumsum(first) - 1
    q = qty[order]
    csum = np.cumsum(q)
    starts = np.flatnonzero(first)
    cum = csum - (csum[starts] - q[starts])[group]
    finite_cap = np.where(np.isfinite(cap[order]), cap[order], 0.0)
    tol = _REL_EPS * np.maximum(finite_cap, 1.0)
    over = base[order] + cum > cap[order] + tol
    rejected: list[int] = []
    if over.any():
        # A reject frees room for later intents of the group: redo those groups one
        # intent at a time (rare: only groups that hit their limit).
        bounds = np.append(starts, order.size)
        for g in np.unique(group[over]).tolist():
            members = order[bounds[g] : bounds[g + 1]]
            used = float(base[members[0]])
            limit = float(cap[members[0]] + tol[bounds[g]])
            for i in members.tolist():
                if used + qty[i] > limit:
                    rejected.append(i)
                else:
                    used += qty[i]
    return np.array(rejected, np.intp)

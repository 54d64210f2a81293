"""Pre-trade checks on a batch of intents, vectorised.

``validate_intents`` rejects what is malformed (BAD_ORDER, UNKNOWN_SYMBOL) and puts every
quantity on the symbol's lot grid. ``RiskEngine.check`` then applies the trading state and
the per-symbol limits. Both return one RejectReason code per intent (0 = passes), so the
engine can journal every intent with its reason in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.records import INTENT, OrderType, RejectReason, Side

# Float noise allowed when flooring qty / lot (0.3 / 0.1 is 2.9999999999999996 lots).
_LOT_EPS = 1e-9
# Relative slack on limit comparisons: positions are sums of lot-grid floats.
_REL_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """Limits of one symbol."""

    max_position: float  # |position| of one agent, base units, open orders included
    max_order_notional: float  # qty * reference price of one intent, quote currency

    def __post_init__(self) -> None:
        if not (self.max_position >= 0 and self.max_order_notional >= 0):
            raise ValueError(f"risk limits must be >= 0: {self}")


def validate_intents(intents: np.ndarray, lot_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reasons uint8, lots int64) per intent.

    lots is qty floored onto the symbol's lot grid (0 where rejected): a quantity below one
    lot, non-finite quantity, side other than BUY/SELL, unknown order type or a LIMIT
    without a positive finite price is BAD_ORDER; a symbol index beyond ``lot_sizes`` is
    UNKNOWN_SYMBOL.
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
    with np.errstate(invalid="ignore", over="ignore"):
        raw = np.floor(qty / lot + _LOT_EPS)
        good = (
            np.isfinite(raw)
            & (raw >= 1)
            & (raw < 2**53)
            & ((side == Side.BUY) | (side == Side.SELL))
            & (
                (otype == OrderType.MARKET)
                | ((otype == OrderType.LIMIT) & np.isfinite(limit) & (limit > 0))
            )
        )
    reasons[~good & (reasons == RejectReason.NONE)] = RejectReason.BAD_ORDER
    lots = np.where(reasons == RejectReason.NONE, raw, 0).astype(np.int64)
    return reasons, lots


class RiskEngine:
    """Per-symbol limits and the trading state."""

    def __init__(
        self, symbols: Sequence[str], limits: RiskLimits | Mapping[str, RiskLimits]
    ) -> None:
        self.symbols = list(symbols)
        self.state = TradingState.ACTIVE
        self._max_position = np.zeros(len(self.symbols))
        self._max_notional = np.zeros(len(self.symbols))
        self.set_limits(limits)

    def set_limits(self, limits: RiskLimits | Mapping[str, RiskLimits]) -> None:
        """Replace the limits; every symbol needs one (no silent 'unlimited' default)."""
        if isinstance(limits, RiskLimits):
            limits = dict.fromkeys(self.symbols, limits)
        missing = [s for s in self.symbols if s not in limits]
        if missing:
            raise ValueError(f"no risk limits for symbols {missing}")
        self._max_position = np.array([limits[s].max_position for s in self.symbols], float)
        self._max_notional = np.array([limits[s].max_order_notional for s in self.symbols], float)

    def limits(self, symbol: str) -> RiskLimits:
        i = self.symbols.index(symbol)
        return RiskLimits(float(self._max_position[i]), float(self._max_notional[i]))

    def set_state(self, state: TradingState | str) -> None:
        self.state = TradingState(state)

    def check(
        self,
        intents: np.ndarray,
        qty: np.ndarray,
        ref_price: np.ndarray,
        position: np.ndarray,
        open_buy: np.ndarray,
        open_sell: np.ndarray,
        prior: np.ndarray | None = None,
    ) -> np.ndarray:
        """RejectReason per intent (uint8, 0 = passes).

        qty: the intent's quantity in base units (on the lot grid). ref_price: the price
        that values it (limit price, or the opposite best quote for a market order; NaN =
        no market). position / open_buy / open_sell: the owning agent's current position
        in the symbol and the unfilled quantity of its open orders per side. ``prior``
        carries earlier rejects (validation), which are kept and not checked again.

        Position check, per agent, symbol and side: current position + open quantity on
        that side + this intent + every earlier intent of the batch on that side that
        passes must stay within max_position (conservative: open orders are assumed to
        fill, crosses are not netted). Earlier intents of the same agent in the batch are
        accepted first, so the result equals checking the batch one intent at a time.
        """
        n = len(intents)
        out = np.zeros(n, np.uint8) if prior is None else np.array(prior, np.uint8)
        live = out == RejectReason.NONE
        if not live.any():
            return out
        if self.state is TradingState.HALTED:
            out[live] = RejectReason.HALTED
            return out
        sym = np.where(live, intents["symbol"], 0).astype(np.intp)
        side = intents["side"].astype(np.int64)

        no_market = live & ~(ref_price > 0)  # NaN compares False
        out[no_market] = RejectReason.NO_MARKET
        live &= ~no_market
        with np.errstate(invalid="ignore"):
            notional = qty * ref_price
        cap_notional = self._max_notional[sym]
        too_big = live & (notional > cap_notional * (1 + _REL_EPS))
        out[too_big] = RejectReason.MAX_NOTIONAL
        live &= ~too_big

        # Exposure in the intent's own direction before it: long exposure for a buy,
        # short exposure for a sell. Reduce-only caps it at zero (may shrink, not grow).
        reduce_only = self.state is TradingState.REDUCE_ONLY
        reason = RejectReason.HALTED if reduce_only else RejectReason.MAX_POSITION
        base = np.where(side > 0, position + open_buy, open_sell - position)
        cap = np.zeros(n) if reduce_only else self._max_position[sym]
        out[_beyond_cap(intents, np.flatnonzero(live), sym, side, qty, base, cap)] = reason
        return out


def _beyond_cap(
    intents: np.ndarray,
    idx: np.ndarray,
    sym: np.ndarray,
    side: np.ndarray,
    qty: np.ndarray,
    base: np.ndarray,
    cap: np.ndarray,
) -> np.ndarray:
    """The intents among ``idx`` that would take their (agent, symbol, side) group beyond
    ``cap``: ``base`` plus the quantity of the group's earlier intents that pass (batch
    order) plus their own."""
    if idx.size == 0:
        return np.zeros(0, np.intp)
    host, pop, agent = intents["host"], intents["population"], intents["agent"]
    order = idx[np.lexsort((idx, side[idx], sym[idx], agent[idx], pop[idx], host[idx]))]
    first = np.zeros(order.size, bool)  # first intent of each (agent, symbol, side) group
    first[0] = True
    for col in (host, pop, agent, sym, side):
        c = col[order]
        first[1:] |= c[1:] != c[:-1]
    group = np.cumsum(first) - 1
    q = qty[order]
    csum = np.cumsum(q)
    starts = np.flatnonzero(first)
    cum = csum - (csum[starts] - q[starts])[group]
    tol = _REL_EPS * np.maximum(cap[order], 1.0)
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

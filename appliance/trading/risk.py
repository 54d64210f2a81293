"""Pre-trade checks of one symbol and one agent at a time, over a whole batch.

``validate_intents`` rejects what is malformed (BAD_ORDER, UNKNOWN_SYMBOL) and puts every
quantity on the symbol's lot grid. ``RiskEngine.check`` then applies the trading state and
the limits of each intent's symbol to the agent that sent it. Both return one RejectReason
code per intent (0 = passes), so the engine can journal every intent with its reason in
the same transaction. The checks across the whole account (gross exposure, order rates,
drawdown) are in account.py.

A CANCEL intent never trades: validation checks only its side and symbol, and no limit
or trading state applies to it (see records.OrderType.CANCEL).

The rules run as compiled loops over the batch (risk_kernels.py): this module says what
they are and hands them the columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.records import INTENT
from appliance.trading import risk_kernels as kernels


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
    reasons = np.zeros(len(intents), np.uint8)
    lots = np.zeros(len(intents), np.int64)
    kernels.validate(
        intents["symbol"], intents["side"], intents["order_type"], intents["qty"],
        intents["limit_price"], np.asarray(lot_sizes, float), reasons, lots,
    )  # fmt: skip
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
        out = np.zeros(len(intents), np.uint8) if prior is None else np.array(prior, np.uint8)
        f = intents
        kernels.symbol_limits(
            out, f["order_type"], f["host"], f["population"], f["agent"],
            f["symbol"].astype(np.int64), f["side"], np.asarray(x.qty, float),
            np.asarray(x.ref_price, float), np.asarray(x.price, float),
            np.asarray(x.mid, float), np.asarray(x.position, float),
            np.asarray(x.open_buy, float), np.asarray(x.open_sell, float),
            np.asarray(x.open_orders, float), self._caps,
            self.state is TradingState.HALTED, self.state is TradingState.REDUCE_ONLY,
        )  # fmt: skip
        return out

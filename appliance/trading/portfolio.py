"""Positions and PnL per agent and symbol, built from fills.

Quantities are integer lots (exact; the float position is ``lots * lot``, the same formula
the journal's ``positions_from_fills`` uses). Cost basis is the average price of the open
position: adding to a position moves the average, reducing it realises
(price - average) * closed quantity, crossing through zero opens the rest at the fill price.
Fees are tracked separately (realised PnL is gross; net = realised + unrealised - fees).
Unrealised PnL marks the position at the mid; a symbol without a mid counts zero.

Applying the same fills in the same order always gives bit-identical results, so a
portfolio rebuilt from the journal equals the one kept incrementally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from appliance.model.orders import Fill

Key = tuple[int, int, int, int]  # (host, population, agent, symbol)


@dataclass(slots=True)
class Position:
    lot: float
    lots: int = 0  # signed
    avg_price: float = 0.0  # of the open position; 0 when flat
    realized: float = 0.0
    fees: float = 0.0

    @property
    def qty(self) -> float:
        return self.lots * self.lot

    def apply(self, side: int, lots: int, price: float, fee: float) -> None:
        signed = lots if side > 0 else -lots
        held = abs(self.lots)
        if self.lots == 0 or (self.lots > 0) == (signed > 0):
            self.avg_price = (self.avg_price * held + price * lots) / (held + lots)
        else:
            closed = min(lots, held)
            direction = 1.0 if self.lots > 0 else -1.0
            self.realized += closed * self.lot * (price - self.avg_price) * direction
            if lots > held:
                self.avg_price = price  # flipped: the rest is a new position at this price
            elif lots == held:
                self.avg_price = 0.0
        self.lots += signed
        self.fees += fee

    def unrealized(self, mark: float) -> float:
        if self.lots == 0 or not math.isfinite(mark):
            return 0.0
        return self.lots * self.lot * (mark - self.avg_price)


@dataclass(frozen=True, slots=True)
class PnL:
    position: float
    realized: float
    unrealized: float
    fees: float


class Portfolio:
    """Every agent's positions. ``marks`` are mids per symbol index (NaN: none)."""

    def __init__(self) -> None:
        self._pos: dict[Key, Position] = {}
        self.fill_count = 0
        self.touched: set[Key] = set()  # keys changed since the last checkpoint

    def apply(self, fill: Fill) -> None:
        self.touched.add(fill.key)
        pos = self._pos.get(fill.key)
        if pos is None:
            pos = self._pos[fill.key] = Position(fill.lot)
        elif pos.lot != fill.lot:
            if pos.lots:
                raise ValueError(f"lot size of {fill.key} changed with a position open")
            pos.lot = fill.lot
        pos.apply(fill.side, fill.lots, fill.price, fill.fee)
        self.fill_count += 1

    def apply_all(self, fills: Iterable[Fill]) -> None:
        for f in fills:
            self.apply(f)

    def held(self, key: Key) -> Position | None:
        """The whole state of one key (None: no fill ever)."""
        return self._pos.get(key)

    def load(self, positions: dict[Key, Position], fill_count: int) -> None:
        """Start from ``positions`` (a checkpoint), as if ``fill_count`` fills made them."""
        self._pos = dict(positions)
        self.fill_count = fill_count
        self.touched = set()

    def position(self, key: Key) -> float:
        pos = self._pos.get(key)
        return pos.qty if pos else 0.0

    def positions(self) -> dict[Key, float]:
        """Non-flat positions, base units."""
        return {k: p.qty for k, p in self._pos.items() if p.lots}

    def totals(self, marks: np.ndarray) -> PnL:
        """Everything, marked at ``marks`` (position: the sum over symbols, only meaningful
        per symbol)."""
        position = realized = unrealized = fees = 0.0
        for k, p in self._pos.items():
            mark = float(marks[k[3]]) if k[3] < len(marks) else math.nan
            position += p.qty
            realized += p.realized
            unrealized += p.unrealized(mark)
            fees += p.fees
        return PnL(position, realized, unrealized, fees)

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
    cash: float = 0.0  # quote currency: -(bought notional) + sold notional - fees
    fills: int = 0

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
        self.cash -= signed * self.lot * price + fee
        self.fees += fee
        self.fills += 1

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

    @property
    def net(self) -> float:
        return self.realized + self.unrealized - self.fees


class Portfolio:
    """Every agent's positions. ``marks`` are mids per symbol index (NaN: none)."""

    def __init__(self) -> None:
        self._pos: dict[Key, Position] = {}
        self.fill_count = 0

    @classmethod
    def from_fills(cls, fills: Iterable[Fill]) -> Portfolio:
        p = cls()
        p.apply_all(fills)
        return p

    def apply(self, fill: Fill) -> None:
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

    def get(self, key: Key) -> Position | None:
        return self._pos.get(key)

    def position(self, key: Key) -> float:
        pos = self._pos.get(key)
        return pos.qty if pos else 0.0

    def positions(self) -> dict[Key, float]:
        """Non-flat positions, base units."""
        return {k: p.qty for k, p in self._pos.items() if p.lots}

    def _group(self, marks: np.ndarray, key_of) -> dict:
        out: dict = {}
        for k, p in self._pos.items():
            g = key_of(k)
            mark = float(marks[k[3]]) if k[3] < len(marks) else math.nan
            acc = out.setdefault(g, [0.0, 0.0, 0.0, 0.0])
            acc[0] += p.qty
            acc[1] += p.realized
            acc[2] += p.unrealized(mark)
            acc[3] += p.fees
        return {g: PnL(*v) for g, v in out.items()}

    def by_key(self, marks: np.ndarray) -> dict[Key, PnL]:
        return self._group(marks, lambda k: k)

    def by_agent(self, marks: np.ndarray) -> dict[tuple[int, int, int], PnL]:
        """Per (host, population, agent), all symbols (position: sum of base units)."""
        return self._group(marks, lambda k: k[:3])

    def by_symbol(self, marks: np.ndarray) -> dict[int, PnL]:
        """Per symbol, all agents: position is the net exposure of the whole appliance."""
        return self._group(marks, lambda k: k[3])

    def totals(self, marks: np.ndarray) -> PnL:
        """Everything (position: sum over symbols, only meaningful per symbol)."""
        return self._group(marks, lambda k: None).get(None, PnL(0.0, 0.0, 0.0, 0.0))

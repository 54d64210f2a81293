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
    """Every agent's positions. ``marks`` are mids per symbol index (NaN: none).

    Beside the positions it keeps running sums per symbol (the account's net position and
    the cost of the open positions) and over the account (realised PnL, fees), so the
    account's PnL and exposure cost O(symbols), not O(agents), for the risk checks that
    need them on every batch. They are float sums, exact to rounding only: reports and
    status use the positions themselves."""

    def __init__(self) -> None:
        self._pos: dict[Key, Position] = {}
        self.fill_count = 0
        self._net: dict[int, float] = {}  # symbol -> sum of positions, base units
        self._cost: dict[int, float] = {}  # symbol -> sum of qty * avg_price
        self._realized = 0.0
        self._fees = 0.0
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
        qty, cost, realized, fees = pos.qty, pos.qty * pos.avg_price, pos.realized, pos.fees
        pos.apply(fill.side, fill.lots, fill.price, fill.fee)
        s = fill.symbol
        self._net[s] = self._net.get(s, 0.0) + pos.qty - qty
        self._cost[s] = self._cost.get(s, 0.0) + pos.qty * pos.avg_price - cost
        self._realized += pos.realized - realized
        self._fees += pos.fees - fees
        self.fill_count += 1

    def net_position(self, symbol: int) -> float:
        """The account's position in ``symbol``: what the venue holds for all agents."""
        return self._net.get(symbol, 0.0)

    def account(self, marks: np.ndarray) -> PnL:
        """The account's PnL from the running sums (see the class doc), marked at ``marks``;
        a symbol without a mark counts no unrealised PnL."""
        unrealized = 0.0
        for s, net in self._net.items():
            mark = float(marks[s]) if s < len(marks) else math.nan
            if math.isfinite(mark):
                unrealized += net * mark - self._cost[s]
        return PnL(sum(self._net.values()), self._realized, unrealized, self._fees)

    def apply_all(self, fills: Iterable[Fill]) -> None:
        for f in fills:
            self.apply(f)

    def held(self, key: Key) -> Position | None:
        """The whole state of one key (None: no fill ever)."""
        return self._pos.get(key)

    def load(self, positions: dict[Key, Position], fill_count: int) -> None:
        """Start from ``positions`` (a checkpoint), as if ``fill_count`` fills made them.
        The running sums are summed afresh: equal to those of a replay to rounding."""
        self._pos = dict(positions)
        self.fill_count = fill_count
        self.touched = set()
        self._net, self._cost = {}, {}
        for (_, _, _, s), pos in self._pos.items():
            self._net[s] = self._net.get(s, 0.0) + pos.qty
            self._cost[s] = self._cost.get(s, 0.0) + pos.qty * pos.avg_price
        self._realized = sum(p.realized for p in self._pos.values())
        self._fees = sum(p.fees for p in self._pos.values())

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

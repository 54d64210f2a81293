"""EMA-crossover momentum agents: long when the fast EMA of the mid is above the slow one.

Each agent trades one symbol with its own fast and slow periods (drawn from the params'
ranges) and a fixed quantity. After a warm-up its target position is +qty while the fast
EMA is above the slow EMA and -qty while below; the base class turns the gap between
target and position into a MARKET intent.

The EMAs are exact over every tick of a batch, without a loop over ticks or agents. For
one agent with smoothing a = 2/(period+1) and decay d = 1-a, after the L mids x_0..x_{L-1}:

    ema_end = d^L * ema_0 + a * sum_j d^(L-1-j) * x_j

The sum depends only on the period and the symbol's mids, not on the agent, so it is one
matrix-vector product of a table of decay powers (one row per distinct period, a few
hundred at most whatever the agent count) with the mids; each agent then gathers its row.
Only non-negative powers of d appear, so long batches cannot overflow (old terms just
underflow to zero); batches longer than the table are taken in chunks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from pydantic import Field, PositiveFloat, ValidationInfo, field_validator, model_validator

from appliance.agents.base import Population, PopulationParams, Prepared

# Ticks per chunk of the EMA update: the decay table has this many + 1 columns per
# distinct period. Larger is fewer matrix products on long catch-up batches.
CHUNK = 1024
# Longest EMA period a param may ask for (ticks of the agent's symbol).
MAX_PERIOD = 1_000_000


class EmaCrossParams(PopulationParams):
    """Params table of an ``ema_cross`` population."""

    # Inclusive range the fast period (in ticks of the agent's symbol) is drawn from.
    fast: tuple[int, int] = (5, 20)
    # Inclusive range of the slow period; must lie above the fast range.
    slow: tuple[int, int] = (50, 200)
    # Trade quantity in base units: one number for every symbol, or a list with one per
    # symbol of the population (in the order of its symbols).
    qty: PositiveFloat | list[PositiveFloat] = 1.0
    # Ticks of its symbol an agent sees before it trades; default: its slow period.
    warmup: int | None = Field(default=None, ge=0)

    @field_validator("fast", "slow")
    @classmethod
    def _range(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if lo < 1 or hi < lo or hi > MAX_PERIOD:
            raise ValueError(
                f"expected [low, high] with 1 <= low <= high <= {MAX_PERIOD}, got [{lo}, {hi}]"
            )
        return value

    @field_validator("qty")
    @classmethod
    def _qty_per_symbol(
        cls, value: float | list[float], info: ValidationInfo
    ) -> float | list[float]:
        n_symbols = (info.context or {}).get("n_symbols")
        if isinstance(value, list) and n_symbols is not None and len(value) != n_symbols:
            raise ValueError(
                f"qty lists {len(value)} quantities but the population trades {n_symbols} symbols"
            )
        return value

    @model_validator(mode="after")
    def _fast_below_slow(self) -> EmaCrossParams:
        if self.fast[1] >= self.slow[0]:
            raise ValueError(
                f"fast periods {list(self.fast)} must all be below slow periods {list(self.slow)}"
            )
        return self


@dataclass(frozen=True)
class EmaPrepared(Prepared):
    # (group index, mids of the group's symbol in tick order), for symbols with ticks.
    mids: tuple[tuple[int, Any], ...]


class EmaCross(Population):
    """EMA-crossover momentum population (see the module docstring)."""

    kind = "ema_cross"
    Params = EmaCrossParams
    kind_state = ("ema_fast", "ema_slow", "seen")
    params: EmaCrossParams

    def __init__(
        self,
        n_agents: int,
        symbols: Sequence[int],
        params: Mapping[str, Any],
        seed: int,
        xp: ModuleType = np,
    ) -> None:
        super().__init__(n_agents, symbols, params, seed, xp)
        p = self.params
        fast = self.rng.integers(p.fast[0], p.fast[1], endpoint=True, size=n_agents)
        slow = self.rng.integers(p.slow[0], p.slow[1], endpoint=True, size=n_agents)
        self.fast_period = fast
        self.slow_period = slow

        qty = np.empty(n_agents)
        per_symbol = p.qty if isinstance(p.qty, list) else [p.qty] * len(self.symbols)
        for (_, agents), q in zip(self.groups, per_symbol, strict=True):
            qty[agents] = q
        warmup = slow if p.warmup is None else np.full(n_agents, p.warmup)

        # Decay table over the distinct periods: row u, column k holds d_u^(CHUNK-k), so
        # the last L columns are d^(L-1)..d^0 (the weights of L mids) and column CHUNK-L
        # is d^L (the weight of the previous EMA).
        periods, inverse = np.unique(np.concatenate([fast, slow]), return_inverse=True)
        alpha = 2.0 / (periods + 1.0)
        powers = np.arange(CHUNK, -1, -1, dtype=np.float64)
        table = np.exp(np.log1p(-alpha)[:, None] * powers[None, :])

        self.qty = xp.asarray(qty)
        self.warmup = xp.asarray(warmup.astype(np.int64))
        self._alpha = xp.asarray(alpha)
        self._table = xp.asarray(table)
        self._fast_row = xp.asarray(inverse[:n_agents])
        self._slow_row = xp.asarray(inverse[n_agents:])

        self.ema_fast = xp.zeros(n_agents, dtype=np.float64)
        self.ema_slow = xp.zeros(n_agents, dtype=np.float64)
        # Ticks of its symbol each agent has seen (0: EMAs not initialised yet).
        self.seen = xp.zeros(n_agents, dtype=np.int64)

    def _layout(self) -> dict[str, np.ndarray]:
        # The EMAs of a snapshot only mean something with the same periods.
        return {
            **super()._layout(),
            "fast_period": self.fast_period,
            "slow_period": self.slow_period,
        }

    @classmethod
    def instrument_errors(
        cls, params: PopulationParams, instruments: Sequence[Any]
    ) -> list[tuple[str, str]]:
        # A qty off the lot grid can never be filled exactly: the agent would chase the
        # remainder with rejected intents forever. One above max_position never passes risk.
        assert isinstance(params, EmaCrossParams)
        qtys = params.qty if isinstance(params.qty, list) else [params.qty] * len(instruments)
        errors = []
        for i, (inst, q) in enumerate(zip(instruments, qtys, strict=True)):
            where = f"qty[{i}]" if isinstance(params.qty, list) else "qty"
            lots = q / inst.lot_size
            if lots < 1 - 1e-9 or abs(lots - round(lots)) > 1e-6:
                errors.append(
                    (where, f"{q} is not a whole number of {inst.name} lots ({inst.lot_size})")
                )
            if q > inst.max_position:
                errors.append(
                    (where, f"{q} exceeds the max_position of {inst.name} ({inst.max_position})")
                )
        return errors

    def prepare(self, ticks: np.ndarray) -> EmaPrepared:
        # Reading fields of the view makes fresh arrays; nothing keeps a reference to it.
        n = len(ticks)
        tick_ns = int(ticks["recv_ns"][-1]) if n else 0
        bid, ask = ticks["bid"], ticks["ask"]
        # A one-sided or broken quote has no mid: skip it rather than poison the EMAs.
        sound = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
        symbol = ticks["symbol"][sound]
        mid = (bid[sound] + ask[sound]) * 0.5
        mids = []
        for g, (s, _) in enumerate(self.groups):
            m = mid[symbol == s]
            if len(m):
                mids.append((g, self.xp.asarray(m)))
        return EmaPrepared(n_ticks=n, tick_ns=tick_ns, mids=tuple(mids))

    def _advance(self, prepared: Prepared) -> Any:
        assert isinstance(prepared, EmaPrepared)
        xp = self.xp
        for g, x in prepared.mids:
            agents = self.groups[g][1]
            fast = self.ema_fast[agents]
            slow = self.ema_slow[agents]
            # Start an agent's EMAs at its first mid (the recursion from there is exact).
            fresh = self.seen[agents] == 0
            fast = xp.where(fresh, x[0], fast)
            slow = xp.where(fresh, x[0], slow)
            frow = self._fast_row[agents]
            srow = self._slow_row[agents]
            for start in range(0, len(x), CHUNK):
                chunk = x[start : start + CHUNK]
                length = len(chunk)
                # Weighted sums of the chunk's mids for every distinct period at once.
                sums = self._alpha * (self._table[:, CHUNK + 1 - length :] @ chunk)
                decay = self._table[:, CHUNK - length]
                fast = decay[frow] * fast + sums[frow]
                slow = decay[srow] * slow + sums[srow]
            self.ema_fast[agents] = fast
            self.ema_slow[agents] = slow
            self.seen[agents] += len(x)

        # Before warm-up the target is the current exposure, i.e. no wish to trade.
        signal = xp.sign(self.ema_fast - self.ema_slow)
        return xp.where(
            self.seen >= self.warmup, signal * self.qty, self.position + self.pending_qty
        )

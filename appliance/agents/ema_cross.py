"""Momentum: EMA crossover. Long while the fast EMA of the mid is above the slow one.

Each agent trades one symbol with its own fast and slow periods and the symbol's
quantity. On every tick of its symbol it updates both EMAs (smoothing 2 / (period + 1),
started at the symbol's first mid) and, once warm (``warmup`` ticks, by default its slow
period), wants +qty while fast > slow, -qty while fast < slow, 0 when they are equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from appliance.agents.kernels import EMA_CROSS
from appliance.agents.params import (
    AgentParam,
    QtyParams,
    Spec,
    Values,
    qty_errors,
    spec_values,
)
from appliance.agents.target import TargetPopulation

# Longest EMA period a param may ask for (ticks of the agent's symbol).
MAX_PERIOD = 1_000_000


class EmaCrossParams(QtyParams):
    """Params table of an ``ema_cross`` population."""

    agent_params = {
        "fast": AgentParam(integer=True, low=1, high=MAX_PERIOD),
        "slow": AgentParam(integer=True, low=1, high=MAX_PERIOD),
    }
    # Fast and slow EMA periods in ticks of the agent's symbol (a number, a [low, high]
    # range drawn per agent, or {values = [...]}: see params.py).
    fast: Spec = (5, 20)
    slow: Spec = (50, 200)
    # Ticks of its symbol an agent sees before it trades; default: its slow period.
    warmup: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> EmaCrossParams:
        # Numbers and ranges must not overlap; explicit values and grids are checked
        # agent by agent (check_agents).
        if isinstance(self.fast, Values) or isinstance(self.slow, Values):
            return self
        fast, slow = spec_values(self.fast), spec_values(self.slow)
        if max(fast) >= min(slow):
            raise ValueError(f"fast periods {fast} must all be below slow periods {slow}")
        return self


class EmaCross(TargetPopulation):
    """EMA-crossover momentum population (see the module docstring)."""

    kind = "ema_cross"
    Params = EmaCrossParams
    backends = ("numpy", "numba", "cupy")
    kernel_id = EMA_CROSS
    cuda_name = "ema_cross"
    f_rows = ("alpha_fast", "alpha_slow", "qty", "ema_fast", "ema_slow")
    i_rows = ("warmup",)
    params: EmaCrossParams

    @classmethod
    def check_agents(cls, params: Any, table: dict[str, np.ndarray]) -> str:
        bad = np.flatnonzero(table["fast"] >= table["slow"])
        if len(bad):
            a = int(bad[0])
            return (
                f"every agent needs fast < slow: agent {a} has fast {table['fast'][a]}, "
                f"slow {table['slow'][a]} ({len(bad)} agents in all)"
            )
        return ""

    @classmethod
    def instrument_errors(cls, params: Any, instruments: Sequence[Any]) -> list[tuple[str, str]]:
        return qty_errors(params.qty, instruments)

    def setup(self, f: np.ndarray, i: np.ndarray) -> None:
        self.fast_period = self.table["fast"]
        self.slow_period = self.table["slow"]
        f[0] = 2.0 / (self.fast_period + 1.0)
        f[1] = 2.0 / (self.slow_period + 1.0)
        f[2] = self.per_agent(self.params.qty)
        w = self.params.warmup
        i[0] = self.slow_period if w is None else w

    def update(self, g: int, agents: slice, mid: float, seen: int) -> np.ndarray:
        fast, slow = self.ema_fast[agents], self.ema_slow[agents]
        if seen == 0:
            fast[:] = mid
            slow[:] = mid
        else:
            fast += self.alpha_fast[agents] * (mid - fast)
            slow += self.alpha_slow[agents] * (mid - slow)
        want = np.sign(fast - slow) * self.qty[agents]
        return np.where(seen + 1 >= self.warmup[agents], want, np.nan)

"""Mean reversion: trade the z-score of the mid against its exponentially weighted mean.

Each agent keeps an exponentially weighted mean and variance of its symbol's mid
(smoothing a = 2 / (lookback + 1)). At each tick, before taking the tick in, the z-score
is z = (mid - mean) / sqrt(var). Once warm (``lookback`` ticks) an agent enters short
(-qty) when z >= entry and long (+qty) when z <= -entry; it exits to flat once the mid
has come back within ``exit`` deviations of the mean (z >= -exit when long, z <= exit when
short), and holds otherwise. The update after the decision is the usual one:
diff = mid - mean; mean += a * diff; var = (1 - a) * (var + a * diff^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from appliance.agents.ema_cross import MAX_PERIOD
from appliance.agents.kernels import MEAN_REVERSION
from appliance.agents.params import AgentParam, QtyParams, Spec, qty_errors
from appliance.agents.target import TargetPopulation

MAX_Z = 100.0


class MeanReversionParams(QtyParams):
    """Params table of a ``mean_reversion`` population."""

    agent_params = {
        "lookback": AgentParam(integer=True, low=2, high=MAX_PERIOD),
        "entry": AgentParam(integer=False, low=0.0, high=MAX_Z),
        "exit": AgentParam(integer=False, low=0.0, high=MAX_Z),
    }
    # Span of the weighted mean and variance, in ticks of the symbol (also the warm-up).
    lookback: Spec = (50, 200)
    # Entry and exit thresholds in deviations (exit below entry for every agent).
    entry: Spec = 2.0
    exit: Spec = 0.5


class MeanReversion(TargetPopulation):
    """z-score mean-reversion population (see the module docstring)."""

    kind = "mean_reversion"
    Params = MeanReversionParams
    backends = ("numpy", "numba", "cupy")
    kernel_id = MEAN_REVERSION
    cuda_name = "mean_reversion"
    f_rows = ("alpha", "entry", "exit", "qty", "mean", "var")
    i_rows = ("warmup",)
    params: MeanReversionParams

    @classmethod
    def check_agents(cls, params: Any, table: dict[str, np.ndarray]) -> str:
        bad = np.flatnonzero(table["exit"] >= table["entry"])
        if len(bad):
            a = int(bad[0])
            return (
                f"every agent needs exit < entry: agent {a} has entry {table['entry'][a]:g}, "
                f"exit {table['exit'][a]:g} ({len(bad)} agents in all)"
            )
        return ""

    @classmethod
    def instrument_errors(cls, params: Any, instruments: Sequence[Any]) -> list[tuple[str, str]]:
        return qty_errors(params.qty, instruments)

    def setup(self, f: np.ndarray, i: np.ndarray) -> None:
        lookback = self.table["lookback"]
        f[0] = 2.0 / (lookback + 1.0)
        f[1] = self.table["entry"]
        f[2] = self.table["exit"]
        f[3] = self.per_agent(self.params.qty)
        i[0] = lookback

    def update(self, g: int, agents: slice, mid: float, seen: int) -> np.ndarray:
        mean, var = self.mean[agents], self.var[agents]
        if seen == 0:
            z = np.zeros(len(mean))
            mean[:] = mid
            var[:] = 0.0
        else:
            diff = mid - mean
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(var > 0.0, diff / np.sqrt(var), 0.0)
            alpha = self.alpha[agents]
            incr = alpha * diff
            var[:] = (1.0 - alpha) * (var + diff * incr)
            mean += incr
        entry, exit_, qty = self.entry[agents], self.exit[agents], self.qty[agents]
        cur = self.target[agents]
        hold = np.full(len(mean), np.nan)
        want = np.select(
            [z >= entry, z <= -entry, (cur > 0) & (z >= -exit_), (cur < 0) & (z <= exit_)],
            [-qty, qty, 0.0, 0.0],
            hold,
        )
        return np.where(seen + 1 >= self.warmup[agents], want, np.nan)

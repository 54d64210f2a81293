"""An example user population: copy this file into your own package and adapt it.

Load it from the config by import path (the package must be importable by the appliance,
e.g. installed, or on PYTHONPATH):

    [[hosts.populations]]
    kind = "examples.populations:Rsi"
    agents = 100
    [hosts.populations.params]
    period = [7, 21]          # drawn per agent, like any per-agent parameter
    qty = 0.01

The contract: subclass ``TargetPopulation``; give ``kind`` and a ``Params`` model
(subclass ``PopulationParams``; per-agent parameters are listed in ``agent_params`` and
typed ``Spec``); name your per-agent float rows in ``f_rows`` (and int rows in
``i_rows``); fill the parameter rows in ``setup``; implement ``update``, which advances
the agents of one symbol over one mid and returns the positions they want (NaN: no
opinion). The base class does the rest: per-tick decisions, signals, the gate, intents,
reports, snapshots. It runs on the NumPy backend (one vectorised call per tick).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.agents import TargetPopulation
from appliance.agents.ema_cross import QtyParams
from appliance.agents.params import AgentParam, Spec


class RsiParams(QtyParams):
    agent_params = {
        "period": AgentParam(integer=True, low=2, high=10_000),
        "band": AgentParam(integer=False, low=0.0, high=50.0),
    }
    # Smoothing period of the average gain and loss, in ticks of the symbol.
    period: Spec = 14
    # Sell above 100 - band, buy below band, flat in between.
    band: Spec = 30.0


class Rsi(TargetPopulation):
    """Contrarian RSI: short when overbought, long when oversold (Wilder smoothing)."""

    kind = "rsi"
    Params = RsiParams
    f_rows = ("alpha", "band", "qty", "last", "gain", "loss")
    params: RsiParams

    def setup(self, f: np.ndarray, i: np.ndarray) -> None:
        f[0] = 1.0 / self.table["period"]
        f[1] = self.table["band"]
        f[2] = self.per_agent(self.params.qty)

    def update(self, g: int, agents: slice, mid: float, seen: int) -> Any:
        last, gain, loss = self.last[agents], self.gain[agents], self.loss[agents]
        if seen > 0:
            a = self.alpha[agents]
            move = mid - last
            gain += a * (np.maximum(move, 0.0) - gain)
            loss += a * (np.maximum(-move, 0.0) - loss)
        last[:] = mid
        total = gain + loss
        with np.errstate(invalid="ignore", divide="ignore"):
            rsi = np.where(total > 0, 100.0 * gain / total, 50.0)
        band, qty = self.band[agents], self.qty[agents]
        want = np.where(rsi > 100.0 - band, -qty, np.where(rsi < band, qty, 0.0))
        return np.where(seen >= 1, want, np.nan)

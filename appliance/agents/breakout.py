"""Breakout: a Donchian channel of the mid, stop and reverse.

Each agent watches the highest and lowest mid of the previous ``window`` ticks of its
symbol. It wants +qty when the mid breaks above that high, -qty when it breaks below that
low, and holds otherwise (no opinion until its first break). The channel depends only on
the symbol and the window, so it is computed once per distinct (symbol, window) pair and
shared by every agent with that window (kernels.breakout_channels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from appliance.agents.base import TickBatch
from appliance.agents.compute import Backend
from appliance.agents.ema_cross import MAX_PERIOD
from appliance.agents.kernels import BREAKOUT, breakout_channels
from appliance.agents.params import AgentParam, QtyParams, Spec, qty_errors
from appliance.agents.target import TargetPopulation

# Longest window: the channel state holds window + 1 slots per channel.
MAX_WINDOW = min(MAX_PERIOD, 100_000)


class BreakoutParams(QtyParams):
    """Params table of a ``breakout`` population."""

    agent_params = {"window": AgentParam(integer=True, low=1, high=MAX_WINDOW)}
    # Channel length in ticks of the symbol.
    window: Spec = (20, 200)


class Breakout(TargetPopulation):
    """Donchian breakout population (see the module docstring)."""

    kind = "breakout"
    Params = BreakoutParams
    backends = ("numpy", "numba", "cupy")
    kernel_id = BREAKOUT
    cuda_name = "breakout"
    f_rows = ("qty",)
    i_rows = ("channel",)
    # The channel deques are derived from the history: rebuilt on restore.
    state_names = (*TargetPopulation.state_names, "history")
    params: BreakoutParams

    def __init__(
        self,
        n_agents: int,
        symbols: Sequence[int],
        params: Mapping[str, Any],
        seed: int,
        backend: str | Backend = "numpy",
        grid: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__(n_agents, symbols, params, seed, backend, grid)
        n_ch = len(self.ch_group)
        depth = int(self.ch_window.max())
        # The last `depth` mids of each symbol (a ring indexed by tick number).
        self.history = np.zeros((len(self.symbols), depth))
        self.dq_idx = np.zeros((2 * n_ch, depth + 1), np.int64)
        self.dq_val = np.zeros((2 * n_ch, depth + 1))
        self.dq_head = np.zeros(2 * n_ch, np.int64)
        self.dq_len = np.zeros(2 * n_ch, np.int64)
        self._x = np.zeros((2 * n_ch, 0))

    @classmethod
    def instrument_errors(cls, params: Any, instruments: Sequence[Any]) -> list[tuple[str, str]]:
        return qty_errors(params.qty, instruments)

    def setup(self, f: np.ndarray, i: np.ndarray) -> None:
        f[0] = self.per_agent(self.params.qty)
        # One channel per distinct (group, window); agents point at theirs.
        pairs = self.agent_group.astype(np.int64) * (MAX_WINDOW + 1) + self.table["window"]
        unique, channel = np.unique(pairs, return_inverse=True)
        self.ch_group = unique // (MAX_WINDOW + 1)
        self.ch_window = unique % (MAX_WINDOW + 1)
        i[0] = channel

    def _layout(self) -> dict[str, np.ndarray]:
        return {**super()._layout(), "ch_window": self.ch_window}

    def channel_inputs(self, batch: TickBatch) -> np.ndarray:
        longest = int(np.diff(self._offsets).max(initial=0))
        if self._x.shape[1] < longest:
            self._x = np.zeros((self._x.shape[0], longest))
        breakout_channels(
            self._offsets, self._mids, self.group_seen, self.ch_group, self.ch_window,
            self.history, self.dq_idx, self.dq_val, self.dq_head, self.dq_len, self._x,
        )  # fmt: skip
        return self._x

    def restore(self, snap: Mapping[str, np.ndarray]) -> None:
        super().restore(snap)
        # Replay each symbol's last mids (up to the longest window) into fresh deques.
        depth = self.history.shape[1]
        kept = np.minimum(self.group_seen, depth)
        offsets = np.concatenate([[0], np.cumsum(kept)])
        first = self.group_seen - kept
        mids = np.concatenate(
            [
                self.history[g, np.arange(f, f + k) % depth]
                for g, (f, k) in enumerate(zip(first, kept, strict=True))
            ]
        )
        self.dq_head[:] = 0
        self.dq_len[:] = 0
        x = np.zeros((self._x.shape[0], max(int(kept.max()), 1)))
        history = self.history.copy()  # rewritten with the same values
        breakout_channels(offsets, mids, first, self.ch_group, self.ch_window, history,
                          self.dq_idx, self.dq_val, self.dq_head, self.dq_len, x)  # fmt: skip

    def update(self, g: int, agents: slice, mid: float, seen: int) -> np.ndarray:
        depth = self.history.shape[1]
        window = self.table["window"][agents]
        # The previous `window` mids, oldest first, straight from the history ring.
        past = self.history[g, (seen - np.arange(depth, 0, -1)) % depth]
        highs = np.full(len(window), np.nan)
        lows = np.full(len(window), np.nan)
        for w in np.unique(window).tolist():
            if seen >= w:
                mask = window == w
                highs[mask] = past[-w:].max()
                lows[mask] = past[-w:].min()
        self.history[g, seen % depth] = mid
        qty = self.qty[agents]
        with np.errstate(invalid="ignore"):
            return np.where(mid > highs, qty, np.where(mid < lows, -qty, np.nan))

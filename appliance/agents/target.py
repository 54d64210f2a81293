"""Target-position populations: each agent decides, per tick, the position it wants.

A kind computes, for every tick of an agent's symbol, the agent's target position (NaN:
no opinion, the target stays). A changed target is a *signal*, stamped with its tick.
After the batch the gate turns target - (position + pending) into one MARKET intent per
agent (order conflation), sent when the agent has nothing in flight and no backoff runs;
each agent has at most one intent in flight, so reports need no per-intent bookkeeping.

Kinds keep their per-agent params and state as rows of two 2-D arrays (``F`` float64,
``I`` int64; one column per agent), so the compiled kernels of every backend take them as
two pointers. Each row is also an attribute (a view) under its name.

Backends: the NumPy reference is ``update`` (one vectorised call per tick over the agents
of the tick's symbol, in a Python loop over ticks); numba runs ``kernels.run_target``;
cupy runs the kind's CUDA kernel (cuda.py), one launch per batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from appliance.agents import jit
from appliance.agents.base import Intents, Population, TickBatch
from appliance.agents.compute import Backend, to_host
from appliance.model.records import OrderType, RejectReason


class TargetPopulation(Population):
    """Base of the target-position kinds (see the module docstring).

    A user kind subclasses it, declares ``f_rows`` / ``i_rows`` and implements ``update``
    (and ``setup`` to fill its param rows); it then runs on the NumPy backend.
    """

    #: Names of the float64 / int64 per-agent rows (params first, then state).
    f_rows: ClassVar[tuple[str, ...]] = ()
    i_rows: ClassVar[tuple[str, ...]] = ()
    #: Index of the kind in kernels.run_target / name of its CUDA kernel (built-ins only).
    kernel_id: ClassVar[int] = -1
    cuda_name: ClassVar[str] = ""
    cuda_reports: ClassVar[str] = "target_reports"

    state_names = (
        "position", "pending_qty", "pending", "retry_after_ns", "target", "decided",
        "group_seen", "F", "I",
    )  # fmt: skip

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
        xp = self.xp
        n = n_agents
        f = np.zeros((len(self.f_rows), n))
        i = np.zeros((len(self.i_rows), n), dtype=np.int64)
        self.setup(f, i)
        self.F = xp.asarray(f)
        self.I = xp.asarray(i)
        for rows, table in ((self.f_rows, self.F), (self.i_rows, self.I)):
            for r, name in enumerate(rows):
                setattr(self, name, table[r])  # a view: writes go to F / I
        self.position = xp.zeros(n)
        # Signed quantity of the outstanding intent not yet filled (0 when none).
        self.pending_qty = xp.zeros(n)
        # True from sending an intent until its final report.
        self.pending = xp.zeros(n, dtype=bool)
        # An agent may not send before this time (reject backoff, cooldown).
        self.retry_after_ns = xp.zeros(n, dtype=np.int64)
        # The position each agent wants (NaN: none yet) and the population tick at which
        # it last changed (-1: never).
        self.target = xp.full(n, np.nan)
        self.decided = xp.full(n, -1, dtype=np.int64)
        # Ticks of each symbol seen so far (every agent of a symbol sees the same ticks).
        self.group_seen = np.zeros(len(self.symbols), dtype=np.int64)
        self._new = np.zeros(jit.BLOCK)  # per-block scratch of the numba kernel
        self._offsets = np.zeros(len(self.symbols) + 1, np.int64)
        self._cursor = np.zeros(len(self.symbols), np.int64)
        self._order = np.zeros(0, np.int64)
        self._mids = np.zeros(0)
        self._out_type[:] = OrderType.MARKET
        if self.backend.name == "cupy":
            from appliance.agents.cuda import CudaKernels

            self._cuda = CudaKernels(self, self.cuda_reports)

    def setup(self, f: np.ndarray, i: np.ndarray) -> None:
        """Fill the kind's param rows of ``f`` and ``i`` (host arrays) from ``self.table``
        and ``self.params``; state rows start at 0."""

    def update(self, g: int, agents: slice, mid: float, seen: int) -> np.ndarray:
        """The reference step: advance ``agents`` (all of group ``g``) over one ``mid``,
        the symbol's tick number ``seen`` (0 for its first); return their targets (NaN:
        no opinion). Called for every tick; its result is used on decision ticks."""
        raise NotImplementedError

    def channel_inputs(self, batch: TickBatch) -> np.ndarray:
        """Per-batch inputs of the compiled kernels (kernels.run_target's ``X``)."""
        return np.zeros((1, 1))

    # ---- one batch -------------------------------------------------------------------------

    def step(self, batch: TickBatch, now_ns: int) -> Intents:
        tick_base = self._counts["ticks"]
        if self.backend.name == "numpy":
            k, signals = self._run_reference(batch, now_ns, tick_base)
        else:
            self._group(batch)
            x = self.channel_inputs(batch)
            if self.backend.name == "numba":
                k, signals = self._run_numba(x, now_ns, tick_base)
            else:
                k, signals = self._run_cuda(x, now_ns, tick_base)
            self.group_seen += np.diff(self._offsets)
        self._count_step(batch, signals, k)
        return self._intents(k, batch)

    def _group(self, batch: TickBatch) -> None:
        n = len(batch)
        if len(self._order) < n:
            self._order = np.zeros(n, np.int64)
            self._mids = np.zeros(n)
        jit.group_ticks(batch.symbol, batch.bid, batch.ask, self.group_of, self._offsets,
                        self._cursor, self._order, self._mids)  # fmt: skip

    def _run_numba(self, x: np.ndarray, now_ns: int, tick_base: int) -> tuple[int, int]:
        from appliance.agents.kernels import run_target

        return run_target(
            self.kernel_id, self._offsets, self._order, self._mids, self.starts, self.stops,
            self.group_seen, self.params.decide == "tick", tick_base, now_ns, self.F, self.I,
            x, self.target, self.decided, self.position, self.pending_qty, self.pending,
            self.retry_after_ns, self._new, self._out_agent, self._out_side, self._out_qty,
            self._out_tick,
        )  # fmt: skip

    def _run_cuda(self, x: np.ndarray, now_ns: int, tick_base: int) -> tuple[int, int]:
        return self._cuda.run_target(self._offsets, self._order, self._mids, x, now_ns, tick_base)

    def _run_reference(self, batch: TickBatch, now_ns: int, tick_base: int) -> tuple[int, int]:
        """The readable reference: a Python loop over ticks, NumPy over agents."""
        bid, ask = batch.bid, batch.ask
        with np.errstate(invalid="ignore"):
            sound = (bid > 0) & (ask > 0) & np.isfinite(bid) & np.isfinite(ask)
        group = self.group_of[batch.symbol]
        usable = np.flatnonzero(sound & (group >= 0))
        last = np.full(len(self.symbols), -1)
        last[group[usable]] = usable  # fancy assignment keeps the last write
        mid = (bid + ask) * 0.5
        per_tick = self.params.decide == "tick"
        k = signals = 0
        for i in usable.tolist():
            g = int(group[i])
            agents = self.groups[g][1]
            new = self.update(g, agents, float(mid[i]), int(self.group_seen[g]))
            self.group_seen[g] += 1
            if per_tick or i == last[g]:
                signals += self._decide(agents, new, tick_base + i)
            if i == last[g]:
                k = self._gate(agents, i, tick_base, now_ns, k)
        return k, signals

    def _decide(self, agents: slice, new: np.ndarray, at: int) -> int:
        old = self.target[agents]
        changed = (new != old) & ~np.isnan(new)
        self.target[agents] = np.where(changed, new, old)
        self.decided[agents] = np.where(changed, at, self.decided[agents])
        return int(changed.sum())

    def _gate(self, agents: slice, last_i: int, tick_base: int, now_ns: int, k: int) -> int:
        """Reference of jit.gate over one group's agents."""
        target = self.target[agents]
        delta = target - (self.position[agents] + self.pending_qty[agents])
        with np.errstate(invalid="ignore"):
            send = (
                ~self.pending[agents]
                & (self.retry_after_ns[agents] <= now_ns)
                & ~np.isnan(target)
                & (np.abs(delta) > jit.QTY_EPSILON)
            )
        idx = np.flatnonzero(send)
        m = len(idx)
        rows = slice(k, k + m)
        self._out_agent[rows] = agents.start + idx
        self._out_side[rows] = np.where(delta[idx] > 0, 1, -1)
        self._out_qty[rows] = np.abs(delta[idx])
        since = self.decided[agents][idx] - tick_base
        self._out_tick[rows] = np.where(since >= 0, since, last_i)
        self.pending[agents][idx] = True
        self.pending_qty[agents][idx] = delta[idx]
        return k + m

    # ---- reports and positions ---------------------------------------------------------------

    def on_reports(self, reports: np.ndarray) -> None:
        """Apply REPORT records addressed to this population (see jit.target_reports)."""
        cols = self._report_columns(reports)
        if len(cols[0]) == 0:
            return
        counts = np.zeros(5, np.int64)
        by_reason = np.zeros(len(RejectReason), np.int64)
        p = self.params
        args = (int(p.reject_backoff_s * 1e9), int(p.cooldown_s * 1e9))
        state = (self.position, self.pending_qty, self.pending, self.retry_after_ns)
        if self.backend.name == "cupy":
            self._cuda.reports(cols, args, state, counts, by_reason)
        else:
            fn = jit.target_reports if self.backend.name == "numba" else jit.target_reports.py_func
            fn(*cols, *args, *state, counts, by_reason)
        self._add_report_counts(counts, by_reason)

    def set_positions(self, positions: np.ndarray, in_flight: np.ndarray | None = None) -> None:
        """Replace every agent's position with the execution side's, after a restart.

        ``in_flight`` is each agent's signed quantity still on its way (published, not yet
        taken by execution; 0: none). Those agents stay pending with it; every other agent
        is settled, since its reports may have been lost with a crashed process and an
        agent left pending could never trade again.
        """
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.n_agents,):
            raise ValueError(f"expected {self.n_agents} positions, got shape {positions.shape}")
        flying = np.zeros(self.n_agents) if in_flight is None else np.asarray(in_flight, float)
        self.position[...] = self.xp.asarray(positions)
        self.pending[...] = self.xp.asarray(flying != 0)
        self.pending_qty[...] = self.xp.asarray(flying)

    def settled(self) -> np.ndarray:
        return ~to_host(self.pending)

    def _layout(self) -> dict[str, np.ndarray]:
        rows = {"f_rows": np.array(self.f_rows), "i_rows": np.array(self.i_rows)}
        return {**super()._layout(), **rows}

"""Market making: two-sided limit quotes around the mid, skewed against inventory.

Each agent quotes one symbol. At every tick it works out where it wants its quotes:
around the reservation price r = mid * (1 - skew * position / max_inventory) (a long
agent quotes lower, to sell more and buy less), bid at r * (1 - half_spread) rounded down
to the price tick, ask at r * (1 + half_spread) rounded up, neither crossing the book.
A side is quoted only while a fill there keeps |position| <= max_inventory.

Per side an agent has at most one order: idle -> sent (LIMIT) -> resting (acked) ->
cancelling (CANCEL sent) -> idle. A resting quote is cancelled when the mid has moved more
than ``requote`` (relative) from the mid it was placed at, or when inventory no longer
allows that side; the replacement goes out on the first tick after the cancel is
confirmed (a replace is cancel, then place: with one order per side, reports keyed by
agent and side are never ambiguous). See OrderType.CANCEL for what execution does.

After a restart an agent cannot know which of its quotes still rest, so it first cancels
both sides (``set_positions``), then quotes afresh.

It reuses the row storage, tick grouping and backends of TargetPopulation, with its own
decisions, gate (LIMIT and CANCEL intents) and report handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, PositiveFloat, ValidationInfo, field_validator

from appliance.agents import kernels as K
from appliance.agents.base import TickBatch
from appliance.agents.compute import to_host
from appliance.agents.params import AgentParam, QtyParams, Spec, per_symbol, qty_errors
from appliance.agents.target import TargetPopulation
from appliance.model.records import OrderType, RejectReason

BPS = 1e-4


class MarketMakingParams(QtyParams):
    """Params table of a ``market_making`` population."""

    agent_params = {
        "half_spread_bps": AgentParam(integer=False, low=0.0, high=10_000.0),
        "skew_bps": AgentParam(integer=False, low=0.0, high=10_000.0),
        "requote_bps": AgentParam(integer=False, low=0.0, high=10_000.0),
    }
    # Half the quoted spread, in basis points of the reservation price.
    half_spread_bps: Spec = 5.0
    # Shift of both quotes at full inventory, in basis points of the mid.
    skew_bps: Spec = 5.0
    # Cancel and replace a resting quote once the mid moved this far from its mid.
    requote_bps: Spec = 2.0
    # Largest |position| per agent, base units: one number or one per symbol; default:
    # four times qty.
    max_inventory: PositiveFloat | list[PositiveFloat] | None = None
    # Price grid of the quotes, per symbol or one for all.
    tick_size: PositiveFloat | list[PositiveFloat] = 0.01
    # Ticks of its symbol an agent sees before it quotes.
    warmup: int = Field(default=1, ge=1)

    @field_validator("max_inventory", "tick_size")
    @classmethod
    def _per_symbol(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None:
            per_symbol(value, info.field_name or "", (info.context or {}).get("n_symbols"))
        return value


class MarketMaking(TargetPopulation):
    """Inventory-skewed two-sided quoting population (see the module docstring)."""

    kind = "market_making"
    Params = MarketMakingParams
    backends = ("numpy", "numba", "cupy")
    cuda_name = "market_making"
    cuda_reports = "mm_reports"
    intents_per_agent = 2
    f_rows = (
        "half", "skew", "requote", "qty", "max_inventory", "tick",
        "quoted_mid_bid", "quoted_mid_ask", "plan_px_bid", "plan_px_ask",
        "plan_mid_bid", "plan_mid_ask",
    )  # fmt: skip
    i_rows = (
        "state_bid", "state_ask", "plan_bid", "plan_ask", "decided_bid", "decided_ask",
        "warmup",
    )  # fmt: skip
    state_names = ("position", "retry_after_ns", "group_seen", "F", "I")
    params: MarketMakingParams

    @classmethod
    def instrument_errors(cls, params: Any, instruments: Sequence[Any]) -> list[tuple[str, str]]:
        errors = qty_errors(params.qty, instruments)
        inv = params.max_inventory
        invs = inv if isinstance(inv, list) else [inv] * len(instruments)
        for i, (inst, m) in enumerate(zip(instruments, invs, strict=True)):
            if m is not None and m > inst.max_position:
                where = f"max_inventory[{i}]" if isinstance(inv, list) else "max_inventory"
                errors.append((where, f"{m} exceeds the max_position of {inst.name}"))
        return errors

    def setup(self, f: np.ndarray, i: np.ndarray) -> None:
        p = self.params
        f[0] = self.table["half_spread_bps"] * BPS
        f[1] = self.table["skew_bps"] * BPS
        f[2] = self.table["requote_bps"] * BPS
        f[3] = self.per_agent(p.qty)
        f[4] = 4.0 * f[3] if p.max_inventory is None else self.per_agent(p.max_inventory)
        f[5] = self.per_agent(p.tick_size)
        i[4:6] = -1
        i[6] = p.warmup

    # ---- one batch ---------------------------------------------------------------------------

    def _run_numba(self, x: np.ndarray, now_ns: int, tick_base: int) -> tuple[int, int]:
        return K.run_market_making(
            self._offsets, self._order, self._mids, self._batch.bid, self._batch.ask,
            self.starts, self.stops, self.group_seen, self.params.decide == "tick", tick_base,
            now_ns, self.F, self.I, self.position, self.retry_after_ns, self._out_agent,
            self._out_side, self._out_qty, self._out_type, self._out_price, self._out_tick,
        )  # fmt: skip

    def _run_cuda(self, x: np.ndarray, now_ns: int, tick_base: int) -> tuple[int, int]:
        b = self._batch
        return self._cuda.run_market_making(
            self._offsets, self._order, self._mids, b.bid, b.ask, now_ns, tick_base
        )

    def step(self, batch: TickBatch, now_ns: int):  # type: ignore[override]
        self._batch = batch  # the kernels read each tick's best bid and ask
        return super().step(batch, now_ns)

    def _run_reference(self, batch: TickBatch, now_ns: int, tick_base: int) -> tuple[int, int]:
        """Per tick, the quotes of the symbol's agents as NumPy arrays (mm_decide's maths),
        then the gate at the symbol's last tick (mm_gate's)."""
        bid, ask = batch.bid, batch.ask
        with np.errstate(invalid="ignore"):
            sound = (bid > 0) & (ask > 0) & np.isfinite(bid) & np.isfinite(ask)
        group = self.group_of[batch.symbol]
        usable = np.flatnonzero(sound & (group >= 0))
        last = np.full(len(self.symbols), -1)
        last[group[usable]] = usable
        per_tick = self.params.decide == "tick"
        k = signals = 0
        for i in usable.tolist():
            g = int(group[i])
            agents = self.groups[g][1]
            seen = int(self.group_seen[g])
            self.group_seen[g] += 1
            if per_tick or i == last[g]:
                signals += self._plan(agents, i, batch, seen, tick_base + i)
            if i == last[g]:
                k = self._send(agents, i, tick_base, now_ns, k)
        return k, signals

    def _plan(self, agents: slice, i: int, batch: TickBatch, seen: int, at: int) -> int:
        mid = (batch.bid[i] + batch.ask[i]) * 0.5
        F, ints = self.F[:, agents], self.I[:, agents]
        warm = seen + 1 >= ints[6]
        pos = self.position[agents]
        tick, qty, max_inv = F[5], F[3], F[4]
        r = mid * (1.0 - F[1] * (pos / max_inv))
        px = (
            np.minimum(np.floor(r * (1.0 - F[0]) / tick + K.ROUNDING) * tick, batch.ask[i] - tick),
            np.maximum(np.ceil(r * (1.0 + F[0]) / tick - K.ROUNDING) * tick, batch.bid[i] + tick),
        )
        room = max_inv * 1e-9
        can = (pos + qty <= max_inv + room, pos - qty >= -max_inv - room)
        changed = 0
        for s in range(2):
            state, quoted = ints[s], F[6 + s]
            with np.errstate(invalid="ignore"):
                moved = ~(np.abs(mid - quoted) <= F[2] * quoted)
            place = (state == K.IDLE) & can[s] & (px[s] > 0)
            plan = np.select(
                [place, (state == K.RESTING) & (~can[s] | moved)],
                [K.PLACE, K.CANCEL],
                K.NONE,
            )
            plan = np.where(warm, plan, ints[2 + s])
            price = np.where(plan == K.PLACE, px[s], 0.0)
            price = np.where(warm, price, F[8 + s])
            diff = warm & ((plan != ints[2 + s]) | (price != F[8 + s]))
            changed += int(diff.sum())
            ints[4 + s] = np.where(diff, at, ints[4 + s])
            ints[2 + s] = plan
            F[8 + s] = price
            F[10 + s] = np.where(warm, mid, F[10 + s])
        return changed

    def _send(self, agents: slice, last_i: int, tick_base: int, now_ns: int, k: int) -> int:
        F, ints = self.F[:, agents], self.I[:, agents]
        free = self.retry_after_ns[agents] <= now_ns
        for s in range(2):
            plan = ints[2 + s]
            idx = np.flatnonzero(free & (plan != K.NONE))
            rows = slice(k, k + len(idx))
            place = plan[idx] == K.PLACE
            self._out_agent[rows] = agents.start + idx
            self._out_side[rows] = 1 if s == 0 else -1
            since = ints[4 + s][idx] - tick_base
            self._out_tick[rows] = np.where(since >= 0, since, last_i)
            self._out_qty[rows] = np.where(place, F[3][idx], 0.0)
            self._out_type[rows] = np.where(place, OrderType.LIMIT, OrderType.CANCEL)
            self._out_price[rows] = np.where(place, F[8 + s][idx], 0.0)
            ints[s][idx] = np.where(place, K.SENT, K.CANCELLING)
            F[6 + s][idx] = np.where(place, F[10 + s][idx], F[6 + s][idx])
            ints[2 + s][idx] = K.NONE
            k += len(idx)
        return k

    # ---- reports and positions ---------------------------------------------------------------

    def on_reports(self, reports: np.ndarray) -> None:
        """Apply REPORT records addressed to this population (see kernels.mm_reports)."""
        cols = self._report_columns(reports)
        if len(cols[0]) == 0:
            return
        counts = np.zeros(5, np.int64)
        by_reason = np.zeros(len(RejectReason), np.int64)
        p = self.params
        args = (int(p.reject_backoff_s * 1e9), int(p.cooldown_s * 1e9))
        state = (self.position, self.I, self.retry_after_ns)
        if self.backend.name == "cupy":
            self._cuda.reports(cols, args, state, counts, by_reason)
        else:
            fn = K.mm_reports if self.backend.name == "numba" else K.mm_reports.py_func
            fn(*cols, *args, *state, counts, by_reason)
        self._add_report_counts(counts, by_reason)

    def set_positions(self, positions: np.ndarray, in_flight: np.ndarray | None = None) -> None:
        """Positions from the execution side; both sides of every agent are cancelled
        first (their quotes may still rest), then quoted afresh."""
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (self.n_agents,):
            raise ValueError(f"expected {self.n_agents} positions, got shape {positions.shape}")
        xp = self.xp
        self.position[...] = xp.asarray(positions)
        self.I[0:2] = K.RESTING
        self.I[2:4] = K.NONE
        self.F[6:8] = np.nan  # no known quote mid: the next decision cancels

    def settled(self) -> np.ndarray:
        states = to_host(self.I[0:2])
        return (states == K.IDLE).all(axis=0)

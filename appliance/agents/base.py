"""What every agent population shares: struct-of-arrays state, order gating, reports.

A population is many agents of one kind. Its state is one array per variable with one
row per agent, so a kernel call updates every agent at once. Each agent trades exactly
one symbol: the population's symbols are dealt out to agents in contiguous blocks, so the
agents of one symbol are a slice (no gather/scatter in kernels).

Tick handling is two-phase because the agent host reads ticks as zero-copy views of a
shared ring that the feed may overwrite while they are read:

1. ``prepare(view)`` copies what the kind needs out of the view and touches no state;
2. the host checks the ring's claim cursor; if the writer lapped the view, it drops the
   prepared batch (a gap) and the population is exactly as before;
3. ``step(prepared, now_ns)`` advances the state and returns the intents.

An agent with an outstanding intent (sent, no final report yet) sends nothing else, so
each agent has at most one intent in flight and reports need no per-intent bookkeeping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from appliance.agents.xp import to_host
from appliance.model.records import INTENT, REPORT, OrderType, RejectReason, ReportKind, Side

# Exposure differences below this many base units are float noise from adding fills,
# not a wish to trade.
QTY_EPSILON = 1e-12


# Longest wait a param may ask for: a day keeps every time in int64 nanoseconds.
MAX_WAIT_S = 86_400.0


class PopulationParams(BaseModel):
    """Parameters every population kind accepts; kinds subclass this with their own."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # After a REJECT an agent waits this long before it may try again, so an agent whose
    # wish breaks a risk limit does not resend it on every batch.
    reject_backoff_s: float = Field(default=1.0, ge=0.0, le=MAX_WAIT_S)
    # After any other finished intent an agent waits this long before its next one: a
    # holding period, which keeps agents on noisy signals from trading on every tick.
    cooldown_s: float = Field(default=0.0, ge=0.0, le=MAX_WAIT_S)
    # The time over which an agent expects its signal (an intent's side) to play out: its
    # signal accuracy compares the mid then with the mid at the signal (docs/metrics.md).
    horizon_s: float = Field(default=1.0, gt=0.0, le=MAX_WAIT_S)


@dataclass(frozen=True)
class Prepared:
    """Data copied out of one tick batch by ``prepare``; kinds subclass it with their fields."""

    # Number of ticks in the batch (all symbols, not only the population's).
    n_ticks: int
    # recv_ns of the newest tick of the batch; 0 for an empty batch.
    tick_ns: int


@dataclass(frozen=True)
class Intents:
    """The intents of one ``step``, struct of arrays on the host (NumPy), one row each."""

    agent: np.ndarray  # uint32: agent index within the population
    symbol: np.ndarray  # uint16: symbol index
    side: np.ndarray  # int8: Side.BUY or Side.SELL
    qty: np.ndarray  # float64: positive quantity in base units
    order_type: np.ndarray  # uint8: OrderType
    limit_price: np.ndarray  # float64: 0 for MARKET
    tick_ns: int  # recv_ns of the newest tick of the batch that produced them

    def __len__(self) -> int:
        return len(self.agent)

    def write(self, out: np.ndarray, *, population: int, host: int, created_ns: int) -> None:
        """Write these intents into ``out[:len(self)]``, INTENT records, field by field.

        ``out`` is typically a slot run of a shared-memory queue: every field except
        ``seq`` (the queue assigns it) is written, including the reserved bytes, so no
        stale bytes of an earlier record survive.
        """
        n = len(self)
        if out.dtype != INTENT or len(out) < n:
            raise ValueError(f"need at least {n} INTENT records, got {len(out)} of {out.dtype}")
        dst = out[:n]
        dst["created_ns"] = created_ns
        dst["tick_ns"] = self.tick_ns
        dst["qty"] = self.qty
        dst["limit_price"] = self.limit_price
        dst["agent"] = self.agent
        dst["population"] = population
        dst["host"] = host
        dst["symbol"] = self.symbol
        dst["side"] = self.side
        dst["order_type"] = self.order_type
        dst["_reserved"] = b""


class Population(ABC):
    """Base class of agent populations (see the module docstring for the protocol)."""

    #: Registry name of the kind, as written in the config (``kind = "..."``).
    kind: ClassVar[str]
    #: The pydantic model of the kind's params table.
    Params: ClassVar[type[PopulationParams]] = PopulationParams
    #: Names of the state arrays of the kind, on top of the base ones; they all have one
    #: row per agent and are saved by ``snapshot``.
    kind_state: ClassVar[tuple[str, ...]] = ()

    _BASE_STATE = ("position", "pending_qty", "pending", "retry_after_ns")

    def __init__(
        self,
        n_agents: int,
        symbols: Sequence[int],
        params: Mapping[str, Any],
        seed: int,
        xp: ModuleType = np,
    ) -> None:
        if n_agents < 1:
            raise ValueError(f"a population needs at least one agent, got {n_agents}")
        symbols = [int(s) for s in symbols]
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be a non-empty list of distinct indexes: {symbols}")
        if n_agents < len(symbols):
            raise ValueError(f"{n_agents} agents cannot cover {len(symbols)} symbols")
        self.xp = xp
        self.n_agents = n_agents
        self.symbols = tuple(symbols)
        self.params = self.validate_params(params, len(symbols))
        # Parameters are drawn on the host with NumPy so that a seed gives the same agents
        # whichever backend runs the kernels.
        self.rng = np.random.default_rng(seed)

        # Contiguous blocks of agents per symbol: agent i trades symbols[i * k // n].
        block = (np.arange(n_agents) * len(symbols)) // n_agents
        bounds = np.searchsorted(block, np.arange(len(symbols) + 1))
        #: (symbol index, slice of agents trading it), one per population symbol.
        self.groups: list[tuple[int, slice]] = [
            (s, slice(int(bounds[i]), int(bounds[i + 1]))) for i, s in enumerate(symbols)
        ]
        self.agent_symbol = np.asarray(symbols, dtype=np.uint16)[block]

        self.position = xp.zeros(n_agents, dtype=np.float64)
        # Signed quantity of the outstanding intent not yet filled (0 when none).
        self.pending_qty = xp.zeros(n_agents, dtype=np.float64)
        # True from sending an intent until its final report.
        self.pending = xp.zeros(n_agents, dtype=bool)
        # An agent may not send before this time (set by rejects).
        self.retry_after_ns = xp.zeros(n_agents, dtype=np.int64)

        self._counts = dict.fromkeys(
            ("batches", "ticks", "intents", "acks", "fills", "cancels", "rejects", "bad_reports"),
            0,
        )
        self._rejects_by_reason = np.zeros(len(RejectReason), dtype=np.int64)

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], n_symbols: int) -> PopulationParams:
        """The kind's params model for ``params``; pydantic's ValidationError when invalid.

        ``n_symbols`` (how many symbols the population trades) is passed as validation
        context for params that give one value per symbol.
        """
        return cls.Params.model_validate(dict(params), context={"n_symbols": n_symbols})

    @classmethod
    def instrument_errors(
        cls, params: PopulationParams, instruments: Sequence[Any]
    ) -> list[tuple[str, str]]:
        """Problems of valid ``params`` against the instruments the population trades
        (objects with ``name``, ``lot_size`` and ``max_position``, in population order):
        (param name, message) pairs, checked when the config loads."""
        return []

    # ---- tick handling -----------------------------------------------------------------

    @abstractmethod
    def prepare(self, ticks: np.ndarray) -> Prepared:
        """Copy what this kind needs out of ``ticks`` (TICK view); must not change state."""

    @abstractmethod
    def _advance(self, prepared: Prepared) -> Any:
        """Advance the kind's state over a prepared batch; the target position per agent."""

    def step(self, prepared: Prepared, now_ns: int) -> Intents:
        """Advance over ``prepared`` and return the intents, marking their agents pending."""
        xp = self.xp
        target = self._advance(prepared)
        self._counts["batches"] += 1
        self._counts["ticks"] += prepared.n_ticks

        delta = target - (self.position + self.pending_qty)
        send = (xp.abs(delta) > QTY_EPSILON) & ~self.pending & (self.retry_after_ns <= now_ns)
        idx = xp.nonzero(send)[0]
        wish = delta[idx]
        self.pending[idx] = True
        self.pending_qty[idx] = wish

        agent = to_host(idx).astype(np.uint32)
        wish = to_host(wish)
        n = len(agent)
        self._counts["intents"] += n
        return Intents(
            agent=agent,
            symbol=self.agent_symbol[agent],
            side=np.where(wish > 0, Side.BUY, Side.SELL).astype(np.int8),
            qty=np.abs(wish),
            order_type=np.full(n, OrderType.MARKET, dtype=np.uint8),
            limit_price=np.zeros(n, dtype=np.float64),
            tick_ns=prepared.tick_ns,
        )

    # ---- reports and positions ---------------------------------------------------------

    def on_reports(self, reports: np.ndarray) -> None:
        """Apply REPORT records addressed to this population (the host filters by population).

        FILLs move positions (and the outstanding quantity); a final report of any kind
        clears the agent's pending flag; a REJECT also starts the agent's reject backoff.
        Reports naming an agent outside the population, or a FILL with a bad side or
        quantity, are counted as ``bad_reports`` and ignored.
        """
        if reports.dtype != REPORT:
            raise ValueError(f"expected REPORT records, got {reports.dtype}")
        if len(reports) == 0:
            return
        xp = self.xp
        agent = reports["agent"].astype(np.int64)
        kind = reports["kind"]
        side = reports["side"].astype(np.float64)
        fill_qty = reports["fill_qty"]
        known = agent < self.n_agents
        is_fill = kind == ReportKind.FILL
        good_fill = is_fill & (np.abs(side) == 1) & (fill_qty > 0) & np.isfinite(fill_qty)
        bad = ~known | (is_fill & ~good_fill)
        ok = ~bad
        self._counts["bad_reports"] += int(bad.sum())

        fills = ok & is_fill
        if fills.any():
            # bincount sums several fills of one agent in the same batch (fancy-index
            # assignment would keep only one of them); it exists in NumPy and CuPy alike.
            moved = np.bincount(
                agent[fills], weights=side[fills] * fill_qty[fills], minlength=self.n_agents
            )
            moved = xp.asarray(moved)
            self.position += moved
            self.pending_qty -= moved
            self._counts["fills"] += int(fills.sum())

        self._counts["acks"] += int((ok & (kind == ReportKind.ACK)).sum())
        self._counts["cancels"] += int((ok & (kind == ReportKind.CANCEL)).sum())
        rejects = ok & (kind == ReportKind.REJECT)
        if rejects.any():
            self._counts["rejects"] += int(rejects.sum())
            reasons = np.minimum(reports["reason"][rejects], len(RejectReason) - 1)
            self._rejects_by_reason += np.bincount(reasons, minlength=len(RejectReason))
            backoff_ns = int(self.params.reject_backoff_s * 1e9)
            until = reports["ts_ns"][rejects] + backoff_ns
            self.retry_after_ns[xp.asarray(agent[rejects])] = xp.asarray(until)

        final = ok & (reports["final"] != 0)
        if final.any():
            done = xp.asarray(agent[final])
            self.pending[done] = False
            self.pending_qty[done] = 0.0
            settled = final & ~rejects
            if self.params.cooldown_s and settled.any():
                until = reports["ts_ns"][settled] + int(self.params.cooldown_s * 1e9)
                self.retry_after_ns[xp.asarray(agent[settled])] = xp.asarray(until)

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

    # ---- snapshots and counters --------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """The population's state as host arrays (for a warm restart); see ``restore``."""
        snap = {name: to_host(getattr(self, name)).copy() for name in self._state_names()}
        snap.update({name: value.copy() for name, value in self._layout().items()})
        snap["kind"] = np.array(self.kind)
        return snap

    def restore(self, snap: Mapping[str, np.ndarray]) -> None:
        """Load a ``snapshot`` of a population with the same kind and agent layout."""
        if str(snap.get("kind", "")) != self.kind:
            raise ValueError(f"snapshot of kind {snap.get('kind')!r}, expected {self.kind!r}")
        for name, value in self._layout().items():
            if not np.array_equal(snap.get(name), value):
                raise ValueError(f"snapshot has a different {name} (another config or seed)")
        for name in self._state_names():
            current = getattr(self, name)
            value = np.asarray(snap[name])
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ValueError(
                    f"snapshot field {name!r}: {value.dtype}{value.shape}, "
                    f"expected {current.dtype}{current.shape}"
                )
        for name in self._state_names():
            getattr(self, name)[...] = self.xp.asarray(snap[name])

    @property
    def counters(self) -> dict[str, int]:
        """Monotonic counters: batches, ticks, intents, acks, fills, cancels, rejects,
        bad_reports, and rejects_<reason> per RejectReason."""
        counts = dict(self._counts)
        for reason in RejectReason:
            if reason != RejectReason.NONE:
                counts[f"rejects_{reason.name.lower()}"] = int(self._rejects_by_reason[reason])
        return counts

    def agent_params(self) -> dict[str, np.ndarray]:
        """Each agent's drawn parameters, one host array per parameter (reports show them)."""
        return {k: v for k, v in self._layout().items() if k != "agent_symbol"}

    def _layout(self) -> dict[str, np.ndarray]:
        """Host arrays fixed at construction that a snapshot must match to be restored."""
        return {"agent_symbol": self.agent_symbol}

    def _state_names(self) -> tuple[str, ...]:
        return self._BASE_STATE + self.kind_state

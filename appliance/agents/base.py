"""What every agent population shares: layout, per-agent params, intents, snapshots.

A population is many agents of one kind. Its state is one array per variable with one
row per agent, so one kernel call advances every agent. Each agent trades exactly one
symbol: the population's symbols are dealt out to agents in contiguous blocks (a
*group* per symbol), so the agents of one symbol are a slice.

Decisions are per tick: every agent sees every tick of its symbol in order and decides on
each one (``decide = "batch"`` in the params: once per batch, on the batch's last tick of
its symbol, as documented conflation). Orders are conflated per batch: after the batch an
agent sends at most what its last decision asks for, and the intent carries the time of
the tick of that decision. ``counters`` counts both: ``signals`` (decisions that changed
what an agent wants, per tick) and ``intents`` (orders, per batch).

Tick handling is two-phase because the agent host reads ticks as zero-copy views of a
shared ring that the feed may overwrite while they are read:

1. ``prepare(view)`` copies the fields kernels read (a TickBatch; the host makes one per
   view and shares it between its populations) and touches no state;
2. the host checks the ring's claim cursor; if the writer lapped the view, it drops the
   batch (a gap) and the population is exactly as before;
3. ``step(batch, now_ns)`` advances the state and returns the intents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from appliance.agents.compute import Backend, resolve, to_host
from appliance.agents.params import AgentParam, PopulationParams, agent_table
from appliance.model.records import INTENT, REPORT, RejectReason

# Index table size: any uint16 symbol of a tick maps to a group (-1: not traded).
_SYMBOL_SPACE = 1 << 16


@dataclass(frozen=True)
class TickBatch:
    """The tick fields kernels read, copied out of a ring view (one row per tick)."""

    symbol: np.ndarray  # uint16
    bid: np.ndarray  # float64
    ask: np.ndarray  # float64
    recv_ns: np.ndarray  # int64

    @classmethod
    def from_ticks(cls, ticks: np.ndarray) -> TickBatch:
        # Reading fields of the view makes fresh arrays; nothing keeps a reference to it.
        return cls(
            np.array(ticks["symbol"]),
            np.array(ticks["bid"]),
            np.array(ticks["ask"]),
            np.array(ticks["recv_ns"]),
        )

    def __len__(self) -> int:
        return len(self.symbol)


@dataclass(frozen=True)
class Intents:
    """The intents of one ``step``, struct of arrays on the host, in agent order."""

    agent: np.ndarray  # uint32: agent index within the population
    symbol: np.ndarray  # uint16: symbol index
    side: np.ndarray  # int8: Side.BUY or Side.SELL
    qty: np.ndarray  # float64: positive quantity in base units (0 for CANCEL)
    order_type: np.ndarray  # uint8: OrderType
    limit_price: np.ndarray  # float64: 0 for MARKET and CANCEL
    tick_ns: np.ndarray  # int64: recv_ns of the tick of the decision each one carries out

    def __len__(self) -> int:
        return len(self.agent)

    def write(self, out: np.ndarray, *, population: int, host: int, created_ns: int) -> None:
        """Write these intents into ``out[:len(self)]``, INTENT records, field by field.

        ``out`` is typically a slot run of a shared-memory queue: every field except
        ``seq`` (the queue assigns it) is written, including the reserved bytes, so no
        stale bytes of an earlier record survive. One vectorised store per field.
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


def blocks(n_agents: int, n_symbols: int) -> np.ndarray:
    """Group index of each agent: contiguous, equal-as-can-be blocks per symbol."""
    return (np.arange(n_agents) * n_symbols) // n_agents


class Population(ABC):
    """Base class of agent populations (see the module docstring for the protocol).

    The contract a kind (built-in or a user's, loaded by import path) fulfils: the class
    attributes below, and ``step``, ``on_reports``, ``set_positions`` and ``settled``.
    """

    #: Registry name of the kind, as written in the config (``kind = "..."``).
    kind: ClassVar[str]
    #: The pydantic model of the kind's params table.
    Params: ClassVar[type[PopulationParams]] = PopulationParams
    #: Names of the state arrays (one row per agent) that ``snapshot`` saves.
    state_names: ClassVar[tuple[str, ...]] = ()
    #: Backends the kind has kernels for (compute.py); ``auto`` picks the best of them.
    backends: ClassVar[tuple[str, ...]] = ("numpy",)
    #: Most intents one agent may send per step.
    intents_per_agent: ClassVar[int] = 1

    def __init__(
        self,
        n_agents: int,
        symbols: Sequence[int],
        params: Mapping[str, Any],
        seed: int,
        backend: str | Backend = "numpy",
        grid: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        if n_agents < 1:
            raise ValueError(f"a population needs at least one agent, got {n_agents}")
        symbols = [int(s) for s in symbols]
        if not symbols or len(set(symbols)) != len(symbols):
            raise ValueError(f"symbols must be a non-empty list of distinct indexes: {symbols}")
        if not all(0 <= s < _SYMBOL_SPACE for s in symbols):
            raise ValueError(f"symbol indexes must fit uint16: {symbols}")
        if n_agents < len(symbols):
            raise ValueError(f"{n_agents} agents cannot cover {len(symbols)} symbols")
        self.backend = resolve(backend, (*self.backends, "auto"))
        self.xp = self.backend.xp
        self.n_agents = n_agents
        self.symbols = tuple(symbols)
        self.params = self.validate_params(params, len(symbols))
        # Parameters are drawn on the host with NumPy so that a seed gives the same agents
        # whichever backend runs the kernels.
        self.rng = np.random.default_rng(seed)

        group = blocks(n_agents, len(symbols))
        bounds = np.searchsorted(group, np.arange(len(symbols) + 1))
        #: (symbol index, slice of agents trading it), one per population symbol.
        self.groups: list[tuple[int, slice]] = [
            (s, slice(int(bounds[i]), int(bounds[i + 1]))) for i, s in enumerate(symbols)
        ]
        self.starts = bounds[:-1].astype(np.int64)
        self.stops = bounds[1:].astype(np.int64)
        self.agent_group = group.astype(np.int32)
        self.agent_symbol = np.asarray(symbols, dtype=np.uint16)[group]
        self.group_of = np.full(_SYMBOL_SPACE, -1, dtype=np.int32)
        self.group_of[symbols] = np.arange(len(symbols), dtype=np.int32)
        self.grid = {k: list(v) for k, v in (grid or {}).items()}
        #: Per-agent parameters (host arrays), one entry per ``Params.agent_params``.
        self.table = self.agent_table(self.params, self.grid, n_agents, len(symbols), self.rng)

        cap = self.intents_per_agent * n_agents
        self._out_agent = np.zeros(cap, np.int64)
        self._out_side = np.zeros(cap, np.int8)
        self._out_qty = np.zeros(cap, np.float64)
        self._out_type = np.zeros(cap, np.uint8)
        self._out_price = np.zeros(cap, np.float64)
        self._out_tick = np.zeros(cap, np.int64)
        self._counts = dict.fromkeys(
            (
                "batches", "ticks", "signals", "intents", "acks", "fills", "cancels",
                "rejects", "bad_reports",
            ),
            0,
        )  # fmt: skip
        self._rejects_by_reason = np.zeros(len(RejectReason), dtype=np.int64)

    # ---- params ---------------------------------------------------------------------------

    @classmethod
    def validate_params(cls, params: Mapping[str, Any], n_symbols: int) -> PopulationParams:
        """The kind's params model for ``params``; pydantic's ValidationError when invalid.

        ``n_symbols`` (how many symbols the population trades) is passed as validation
        context for params that give one value per symbol.
        """
        return cls.Params.model_validate(dict(params), context={"n_symbols": n_symbols})

    @classmethod
    def agent_table(
        cls,
        params: PopulationParams,
        grid: Mapping[str, Sequence[float]] | None,
        n_agents: int,
        n_symbols: int,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Per-agent params (see params.py); ValueError naming the problem when invalid."""
        sizes = np.bincount(blocks(n_agents, n_symbols), minlength=n_symbols).tolist()
        table = agent_table(params, grid, sizes, rng)
        problem = cls.check_agents(params, table)
        if problem:
            raise ValueError(problem)
        return table

    @classmethod
    def check_agents(cls, params: PopulationParams, table: dict[str, np.ndarray]) -> str:
        """A problem with the agents' drawn parameters taken together ("" when none)."""
        return ""

    @classmethod
    def agent_params(cls) -> dict[str, AgentParam]:
        return cls.Params.agent_params

    @classmethod
    def instrument_errors(
        cls, params: PopulationParams, instruments: Sequence[Any]
    ) -> list[tuple[str, str]]:
        """Problems of valid ``params`` against the instruments the population trades
        (objects with ``name``, ``lot_size``, ``tick_size`` and ``max_position``, in
        population order): (param name, message) pairs, checked when the config loads."""
        return []

    def per_agent(self, value: float | list[float]) -> np.ndarray:
        """A one-number-or-one-per-symbol param spread over the agents (host array)."""
        per_symbol = value if isinstance(value, list) else [value] * len(self.symbols)
        return np.asarray(per_symbol, dtype=np.float64)[self.agent_group]

    # ---- ticks, intents, reports -----------------------------------------------------------

    def prepare(self, ticks: np.ndarray) -> TickBatch:
        """Copy what kernels read out of ``ticks`` (TICK view); must not change state."""
        return TickBatch.from_ticks(ticks)

    @abstractmethod
    def step(self, batch: TickBatch, now_ns: int) -> Intents:
        """Advance over ``batch`` (deciding on every tick) and return the intents."""

    @abstractmethod
    def on_reports(self, reports: np.ndarray) -> None:
        """Apply REPORT records addressed to this population (the host filters by it)."""

    @abstractmethod
    def set_positions(self, positions: np.ndarray, in_flight: np.ndarray | None = None) -> None:
        """Replace every agent's position with the execution side's, after a restart."""

    @abstractmethod
    def settled(self) -> np.ndarray:
        """Host bool mask: agents with nothing in flight or resting."""

    def _count_step(self, batch: TickBatch, signals: int, n_intents: int) -> None:
        c = self._counts
        c["batches"] += 1
        c["ticks"] += len(batch)
        c["signals"] += int(signals)
        c["intents"] += int(n_intents)

    def _intents(self, k: int, batch: TickBatch) -> Intents:
        """The first ``k`` rows of the output buffers as Intents, sorted by agent (kernels
        that write them in another order, the reference and CUDA ones, need that)."""
        agent = self._out_agent[:k]
        order = np.argsort(agent, kind="stable")
        agent = agent[order]
        return Intents(
            agent=agent.astype(np.uint32),
            symbol=self.agent_symbol[agent],
            side=self._out_side[:k][order],
            qty=self._out_qty[:k][order],
            order_type=self._out_type[:k][order],
            limit_price=self._out_price[:k][order],
            tick_ns=batch.recv_ns[self._out_tick[:k][order]],
        )

    @staticmethod
    def _report_columns(reports: np.ndarray) -> tuple[np.ndarray, ...]:
        if reports.dtype != REPORT:
            raise ValueError(f"expected REPORT records, got {reports.dtype}")
        return tuple(
            np.ascontiguousarray(reports[f]).astype(t, copy=False)
            for f, t in (
                ("agent", np.int64), ("kind", np.uint8), ("side", np.int8),
                ("fill_qty", np.float64), ("reason", np.uint8), ("final", np.uint8),
                ("ts_ns", np.int64),
            )
        )  # fmt: skip

    def _add_report_counts(self, counts: np.ndarray, by_reason: np.ndarray) -> None:
        for name, n in zip(
            ("acks", "fills", "cancels", "rejects", "bad_reports"),
            to_host(counts).tolist(),
            strict=True,
        ):
            self._counts[name] += int(n)
        self._rejects_by_reason += to_host(by_reason)

    # ---- snapshots and counters -------------------------------------------------------------

    def snapshot(self) -> dict[str, np.ndarray]:
        """The population's state as host arrays (for a warm restart); see ``restore``."""
        snap = {name: to_host(getattr(self, name)).copy() for name in self.state_names}
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
        for name in self.state_names:
            current = getattr(self, name)
            value = np.asarray(snap[name])
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ValueError(
                    f"snapshot field {name!r}: {value.dtype}{value.shape}, "
                    f"expected {current.dtype}{current.shape}"
                )
        for name in self.state_names:
            getattr(self, name)[...] = self.xp.asarray(snap[name])

    @property
    def counters(self) -> dict[str, int]:
        """Monotonic counters: batches, ticks, signals (decisions that changed what an
        agent wants), intents (orders sent), acks, fills, cancels, rejects, bad_reports,
        and rejects_<reason> per RejectReason."""
        counts = dict(self._counts)
        for reason in RejectReason:
            if reason != RejectReason.NONE:
                counts[f"rejects_{reason.name.lower()}"] = int(self._rejects_by_reason[reason])
        return counts

    def _layout(self) -> dict[str, np.ndarray]:
        """Host arrays fixed at construction that a snapshot must match to be restored."""
        return {"agent_symbol": self.agent_symbol, **self.table}

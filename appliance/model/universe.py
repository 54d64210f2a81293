"""The Universe: the instrument table and the agent layout, built once from the config
(``Config.universe``) and passed down to whatever indexes by symbol or by agent.

An agent has a *global index*: its population's offset plus its index within the
population, populations in (host, population) order. Everything kept per agent (metrics
rows, and the execution core's dense state as it moves to arrays) is indexed by it. The
journal records the universe's symbols, lots and agent counts with every run (that is what
its indices mean); ``Universe.of`` makes one back from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.model.instruments import Instrument


@dataclass(frozen=True, slots=True)
class PopulationSlot:
    """One population of the layout: who its agents are and their signal horizon."""

    host: int
    population: int
    agents: int
    host_name: str
    kind: str
    horizon_s: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.host_name}.{self.population}:{self.kind}"


class AgentLayout:
    """Hosts, populations and their agent counts, with the global agent index."""

    def __init__(self, populations: Sequence[PopulationSlot]) -> None:
        self.populations = list(populations)
        counts = np.array([p.agents for p in self.populations], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.n_agents = int(self.offsets[-1])
        self.agent_population = np.repeat(np.arange(len(self.populations)), counts)
        hosts = max((p.host for p in self.populations), default=-1) + 1
        pops = max((p.population for p in self.populations), default=-1) + 1
        self._base = np.full((hosts, pops), -1, np.int64)
        for i, p in enumerate(self.populations):
            self._base[p.host, p.population] = self.offsets[i]
        self.horizon_ns = np.array([round(p.horizon_s * 1e9) for p in self.populations], np.int64)

    @property
    def counts(self) -> dict[tuple[int, int], int]:
        """Agents per (host, population)."""
        return {(p.host, p.population): p.agents for p in self.populations}

    def host_agents(self, host: int) -> int:
        """Agents of one host (the rows of its positions snapshot)."""
        return sum(p.agents for p in self.populations if p.host == host)

    def agent_index(self, host: Any, population: Any, agent: Any) -> np.ndarray:
        """Global agent indexes; -1 for an agent the layout lacks."""
        h, p, a = np.broadcast_arrays(*(np.asarray(x, np.int64) for x in (host, population, agent)))
        rows, cols = self._base.shape
        if rows == 0:
            return np.full(h.shape, -1, np.int64)
        ok = (h >= 0) & (h < rows) & (p >= 0) & (p < cols) & (a >= 0)
        base = np.where(ok, self._base[np.clip(h, 0, rows - 1), np.clip(p, 0, cols - 1)], -1)
        idx = base + a
        pop = self.agent_population[np.clip(idx, 0, max(self.n_agents - 1, 0))]
        ok &= (base >= 0) & (idx < self.n_agents) & (idx < self.offsets[pop + 1])
        return np.where(ok, idx, -1)

    def who(self, index: int) -> tuple[PopulationSlot, int]:
        """(population, agent within it) of a global agent index."""
        p = int(self.agent_population[index])
        return self.populations[p], int(index - self.offsets[p])


class Universe:
    """The instrument table (index order) and the agent layout (None: the agents are not
    known, as for an engine driven by tests, whose journal then checks no agents)."""

    def __init__(self, instruments: Sequence[Instrument], agents: AgentLayout | None) -> None:
        self.instruments = tuple(instruments)
        self.agents = agents
        self.symbols = [i.name for i in self.instruments]
        self.lots = np.array([i.lot_size for i in self.instruments], float)

    @classmethod
    def of(
        cls,
        symbols: Sequence[str],
        lot: float | Sequence[float],
        agents: Mapping[tuple[int, int], int] | None = None,
    ) -> Universe:
        """From names and lots, with anonymous populations (``agents`` per (host,
        population)): a journal's record, or a test's universe."""
        lots = np.broadcast_to(np.asarray(lot, float), (len(symbols),))
        layout = None
        if agents is not None:
            slots = [PopulationSlot(h, p, n, f"host{h}", "agents") for (h, p), n in agents.items()]
            layout = AgentLayout(sorted(slots, key=lambda s: (s.host, s.population)))
        return cls([Instrument(s, float(x)) for s, x in zip(symbols, lots, strict=True)], layout)

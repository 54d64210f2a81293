"""Agent populations: many agents of one kind as struct-of-arrays state (see base.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from appliance.agents.base import Intents, Population, PopulationParams, Prepared
from appliance.agents.ema_cross import EmaCross

#: Population kinds by the name a config's ``kind`` uses.
POPULATIONS: dict[str, type[Population]] = {EmaCross.kind: EmaCross}


def population_class(kind: str) -> type[Population]:
    """The class registered for ``kind``; ValueError naming the known kinds otherwise."""
    try:
        return POPULATIONS[kind]
    except KeyError:
        known = ", ".join(sorted(POPULATIONS))
        raise ValueError(f"unknown population kind {kind!r} (known: {known})") from None


def make_population(
    kind: str,
    n_agents: int,
    symbols: Sequence[int],
    params: Mapping[str, Any],
    seed: int,
    xp: ModuleType = np,
) -> Population:
    """A population of ``kind`` (see Population for the arguments)."""
    return population_class(kind)(n_agents, symbols, params, seed, xp)


__all__ = [
    "POPULATIONS",
    "EmaCross",
    "Intents",
    "Population",
    "PopulationParams",
    "Prepared",
    "make_population",
    "population_class",
]

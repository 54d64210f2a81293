"""Agent populations: many agents of one kind as struct-of-arrays state (see base.py).

Built-in kinds: ``ema_cross`` (momentum), ``mean_reversion``, ``market_making`` and
``breakout``. A config may also name a user's kind by import path,
``kind = "mypkg.strategies:MyPop"`` (see ``population_class``).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from appliance.agents.base import Intents, Population, TickBatch
from appliance.agents.breakout import Breakout
from appliance.agents.compute import Backend, BackendError
from appliance.agents.ema_cross import EmaCross
from appliance.agents.market_making import MarketMaking
from appliance.agents.mean_reversion import MeanReversion
from appliance.agents.params import PopulationParams
from appliance.agents.target import TargetPopulation

#: Built-in population kinds by the name a config's ``kind`` uses.
POPULATIONS: dict[str, type[Population]] = {
    cls.kind: cls for cls in (EmaCross, MeanReversion, MarketMaking, Breakout)
}


def population_class(kind: str) -> type[Population]:
    """The class of ``kind``: a built-in name, or ``"module.path:ClassName"``.

    ValueError with a message naming what is wrong: an unknown built-in, a module that
    does not import, a missing class, or a class that breaks the Population contract.
    """
    if ":" not in kind:
        try:
            return POPULATIONS[kind]
        except KeyError:
            known = ", ".join(sorted(POPULATIONS))
            raise ValueError(
                f"unknown population kind {kind!r} (known: {known}; or 'module:Class')"
            ) from None
    module_name, _, class_name = kind.partition(":")
    if not module_name or not class_name.isidentifier():
        raise ValueError(f"population kind {kind!r}: expected 'module.path:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error the module raises on import
        raise ValueError(
            f"population kind {kind!r}: module {module_name!r} does not import "
            f"({type(exc).__name__}: {exc})"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"population kind {kind!r}: module {module_name!r} has no {class_name!r}")
    problem = contract_problem(cls)
    if problem:
        raise ValueError(f"population kind {kind!r}: {problem}")
    return cls


def contract_problem(cls: Any) -> str:
    """What keeps ``cls`` from being a population kind ("" when nothing does)."""
    if not (inspect.isclass(cls) and issubclass(cls, Population)):
        return f"{cls!r} is not a subclass of appliance.agents.Population"
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        return f"{cls.__name__} does not implement {missing}"
    if not isinstance(getattr(cls, "kind", None), str):
        return f"{cls.__name__} needs a class attribute kind (a str)"
    if not (inspect.isclass(cls.Params) and issubclass(cls.Params, PopulationParams)):
        return f"{cls.__name__}.Params must subclass appliance.agents.PopulationParams"
    if issubclass(cls, TargetPopulation) and cls.update is TargetPopulation.update:
        return f"{cls.__name__} must implement update() (the per-tick step)"
    return ""


def make_population(
    kind: str,
    n_agents: int,
    symbols: Sequence[int],
    params: Mapping[str, Any],
    seed: int,
    backend: str | Backend = "numpy",
    grid: Mapping[str, Sequence[float]] | None = None,
) -> Population:
    """A population of ``kind`` (see Population for the arguments)."""
    return population_class(kind)(n_agents, symbols, params, seed, backend, grid)


__all__ = [
    "POPULATIONS",
    "BackendError",
    "Breakout",
    "EmaCross",
    "Intents",
    "MarketMaking",
    "MeanReversion",
    "Population",
    "PopulationParams",
    "TargetPopulation",
    "TickBatch",
    "contract_problem",
    "make_population",
    "population_class",
]

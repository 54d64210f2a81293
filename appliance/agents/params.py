"""Parameters of a population: kind-wide settings and one value per agent.

A kind declares its per-agent parameters in ``agent_params`` (name -> AgentParam). In the
config each of them is written in one of three forms:

- a number: every agent gets it (``fast = 10``);
- ``[low, high]``: each agent draws one, uniformly and inclusively, with the population's
  seed (integers for integer parameters);
- ``{values = [...]}``: explicit values, either one per agent (in agent order) or one per
  agent of each symbol (the same list repeated for every symbol of the population).

A population-level ``grid`` (``grid = {fast = [5, 10, 20], slow = [50, 100, 200]}``) gives
one agent per combination of the listed values, for each symbol of the population: the
agents of every symbol run through the combinations in order (the last key fastest).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Longest wait a param may ask for: a day keeps every time in int64 nanoseconds.
MAX_WAIT_S = 86_400.0


class Values(BaseModel):
    """``{values = [...]}``: explicit per-agent values."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    values: list[float] = Field(min_length=1)


#: How a per-agent parameter is written in the config (see the module docstring).
Spec = float | tuple[float, float] | Values


@dataclass(frozen=True)
class AgentParam:
    """A per-agent parameter of a kind: integer or real, and its inclusive bounds."""

    integer: bool
    low: float
    high: float

    def check(self, name: str, values: Sequence[float]) -> None:
        for v in values:
            if self.integer and v != int(v):
                raise ValueError(f"{name}: {v} is not an integer")
            if not self.low <= v <= self.high:
                raise ValueError(f"{name}: {v} is outside [{self.low:g}, {self.high:g}]")


def spec_values(spec: Spec) -> list[float]:
    """Every number a spec names (its bounds for a range)."""
    if isinstance(spec, Values):
        return list(spec.values)
    if isinstance(spec, tuple):
        return list(spec)
    return [spec]


class PopulationParams(BaseModel):
    """Parameters every population kind accepts; kinds subclass this with their own.

    ``agent_params`` names the fields that take a per-agent Spec, with their bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    agent_params: ClassVar[dict[str, AgentParam]] = {}

    # "tick": every agent decides on every tick of its symbol (the default). "batch": it
    # decides once per tick batch, on the batch's last tick of its symbol (conflation:
    # state still advances over every tick).
    decide: Literal["tick", "batch"] = "tick"
    # After a REJECT an agent waits this long before it may try again, so an agent whose
    # wish breaks a risk limit does not resend it on every batch.
    reject_backoff_s: float = Field(default=1.0, ge=0.0, le=MAX_WAIT_S)
    # After any other finished intent an agent waits this long before its next one: a
    # holding period, which keeps agents on noisy signals from trading on every tick.
    cooldown_s: float = Field(default=0.0, ge=0.0, le=MAX_WAIT_S)
    # The time over which an agent expects its signal (an intent's side) to play out: its
    # signal accuracy compares the mid then with the mid at the signal (docs/metrics.md).
    horizon_s: float = Field(default=1.0, gt=0.0, le=MAX_WAIT_S)

    @model_validator(mode="after")
    def _agent_param_bounds(self) -> PopulationParams:
        for name, param in self.agent_params.items():
            spec = getattr(self, name)
            if isinstance(spec, tuple) and spec[0] > spec[1]:
                raise ValueError(f"{name}: range [{spec[0]:g}, {spec[1]:g}] has low above high")
            param.check(name, spec_values(spec))
        return self


def grid_size(grid: Mapping[str, Sequence[Any]] | None) -> int:
    """Combinations in a grid (1 without one)."""
    return int(np.prod([len(v) for v in (grid or {}).values()], dtype=np.int64))


def agent_table(
    params: PopulationParams,
    grid: Mapping[str, Sequence[float]] | None,
    block_sizes: Sequence[int],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """One array per per-agent parameter, one row per agent; ValueError when impossible.

    ``block_sizes`` are the agent counts of the population's symbols, in agent order.
    Ranges are drawn in ``agent_params`` order, so a seed gives the same agents whatever
    else changes in the config.
    """
    grid = dict(grid or {})
    declared = params.agent_params
    for name, values in grid.items():
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ValueError(f"grid: {name!r} is not a per-agent parameter (known: {known})")
        if not values:
            raise ValueError(f"grid: {name} lists no values")
        declared[name].check(f"grid.{name}", values)
    n = int(sum(block_sizes))
    combos = grid_size(grid)
    if grid and any(b % combos for b in block_sizes):
        raise ValueError(
            f"the grid has {combos} combinations, but the symbols get {list(block_sizes)} "
            f"agents: each symbol needs a multiple of {combos}"
        )
    # Index of each agent within its symbol's block.
    local = np.concatenate([np.arange(b) for b in block_sizes])
    grid_rows = np.array(list(itertools.product(*grid.values())), dtype=np.float64)
    table: dict[str, np.ndarray] = {}
    for name, param in declared.items():
        dtype = np.int64 if param.integer else np.float64
        if name in grid:
            column = list(grid).index(name)
            table[name] = grid_rows[local % combos, column].astype(dtype)
            continue
        spec = getattr(params, name)
        if isinstance(spec, tuple):
            lo, hi = spec
            if param.integer:
                drawn = rng.integers(int(lo), int(hi), endpoint=True, size=n)
            else:
                drawn = rng.uniform(lo, hi, size=n)
            table[name] = drawn.astype(dtype)
        elif isinstance(spec, Values):
            table[name] = _explicit(name, spec.values, block_sizes, local).astype(dtype)
        else:
            table[name] = np.full(n, spec, dtype=dtype)
    return table


def _explicit(
    name: str, values: list[float], block_sizes: Sequence[int], local: np.ndarray
) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    n = int(sum(block_sizes))
    if len(v) == n:
        return v
    if len(set(block_sizes)) == 1 and len(v) == block_sizes[0]:
        return v[local]
    raise ValueError(
        f"{name}: {len(v)} values, expected one per agent ({n}) or one per agent of each "
        f"symbol ({block_sizes[0] if len(set(block_sizes)) == 1 else 'blocks differ'})"
    )


def per_symbol(
    value: float | list[float], name: str, n_symbols: int | None, noun: str = "values"
) -> None:
    """Check a one-number-or-one-per-symbol param against the population's symbol count."""
    if isinstance(value, list) and n_symbols is not None and len(value) != n_symbols:
        raise ValueError(
            f"{name} lists {len(value)} {noun} but the population trades {n_symbols} symbols"
        )


class QtyParams(PopulationParams):
    """Params of kinds that trade a fixed quantity per symbol."""

    # Trade quantity in base units: one number for every symbol, or a list with one per
    # symbol of the population (in the order of its symbols).
    qty: PositiveFloat | list[PositiveFloat] = 1.0

    @field_validator("qty")
    @classmethod
    def _qty_per_symbol(
        cls, value: float | list[float], info: ValidationInfo
    ) -> float | list[float]:
        per_symbol(value, "qty", (info.context or {}).get("n_symbols"), "quantities")
        return value


def qty_errors(qty: float | list[float], instruments: Sequence[Any]) -> list[tuple[str, str]]:
    """A qty off the lot grid can never be filled exactly: the agent would chase the
    remainder with rejected intents forever. One above max_position never passes risk."""
    qtys = qty if isinstance(qty, list) else [qty] * len(instruments)
    errors = []
    for i, (inst, q) in enumerate(zip(instruments, qtys, strict=True)):
        where = f"qty[{i}]" if isinstance(qty, list) else "qty"
        lots = q / inst.lot_size
        if lots < 1 - 1e-9 or abs(lots - round(lots)) > 1e-6:
            lot = f"{inst.name} lots ({inst.lot_size})"
            errors.append((where, f"{q} is not a whole number of {lot}"))
        if q > inst.max_position:
            cap = f"{inst.name} ({inst.max_position})"
            errors.append((where, f"{q} exceeds the max_position of {cap}"))
    return errors

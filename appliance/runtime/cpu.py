"""CPU layout: which cores each process may run on, and which wait strategy that allows."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from appliance.shm.wait import WaitStrategy, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuPlan:
    cores: dict[str, list[int]]  # process name -> allowed cores
    strategy: WaitStrategy  # concrete wait strategy for every hot loop
    shared: bool  # True when processes outnumber cores
    note: str  # one line for the log


def allowed_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def plan(
    processes: list[str],
    mode: str,
    explicit: dict[str, list[int]],
    strategy: str,
    available: list[int] | None = None,
) -> CpuPlan:
    """Place ``processes`` on cores.

    ``auto`` gives each process a core of its own when there are more cores than
    processes (one is left for the supervisor and the OS), else spreads them round-robin
    and says so. ``explicit`` takes the configured core lists as they are; a core that
    this process may not use is an error. The wait strategy ``auto`` becomes ``spin`` only
    when every process has a core of its own.
    """
    available = available if available is not None else allowed_cores()
    if mode == "explicit":
        cores = {}
        for p in processes:
            if p not in explicit:
                raise ValueError(f"cpu.cores has no entry for process {p!r}")
            bad = sorted(set(explicit[p]) - set(available))
            if bad:
                raise ValueError(
                    f"cpu.cores.{p} names cores {bad} outside the allowed set {available}"
                )
            cores[p] = list(explicit[p])
        used = {c for cs in cores.values() for c in cs}
        shared = len(used) < len(processes) or any(len(c) > 1 for c in cores.values())
    else:
        spare = available[1:] if len(available) > len(processes) else available
        cores = {p: [spare[i % len(spare)]] for i, p in enumerate(processes)}
        shared = len(processes) > len(spare)
    # A process that shares its core must never spin: it would burn the slice the
    # process it waits for needs.
    chosen = (
        WaitStrategy.BLOCK
        if shared and strategy == WaitStrategy.AUTO
        else resolve(strategy, spinners=len(processes), cores=len(available))
    )
    if shared and chosen is WaitStrategy.SPIN:
        log.warning("spin wait strategy with processes sharing cores: expect poor latency")
    note = (
        f"{len(processes)} processes on {len(available)} cores "
        f"({'shared' if shared else 'one core each'}); wait strategy {chosen.value}"
    )
    return CpuPlan(cores=cores, strategy=chosen, shared=shared, note=note)


def pin(cores: list[int]) -> None:
    """Restrict the calling process to ``cores``."""
    os.sched_setaffinity(0, cores)

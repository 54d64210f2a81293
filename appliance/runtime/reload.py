"""Reload (SIGHUP): re-read the config file, and apply it whole or not at all.

What a change needs is decided by ``config.diff_config`` alone. A reload is refused whole,
the running config kept, when any change needs the whole appliance (the refusal names each
such change and why) or when the file is invalid. Otherwise the new config becomes the
running one: the processes a change concerns are restarted (planned restarts, see
children.py) and every other process is sent the new config to apply what it reads live.
Applying part of a file would leave a running config that matches neither the old file nor
the new one, which the next reload would then diff against.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from appliance.config import Change, Config, diff_config, load_config
from appliance.runtime import layout
from appliance.runtime.cpu import CpuPlan, plan


class ReloadRefused(Exception):
    """The new config cannot be applied to the running appliance; ``str`` says why."""


@dataclass(frozen=True)
class ReloadPlan:
    """A new config and how to apply it."""

    config: Config
    cpu: CpuPlan  # the new config's CPU layout (same wait strategy as the running one)
    live: list[Change]
    restart: dict[str, list[Change]]  # process name -> the changes that restart it

    @property
    def unchanged(self) -> bool:
        return not self.live and not self.restart


def plan_reload(running: Config, running_cpu: CpuPlan, path: str | os.PathLike[str]) -> ReloadPlan:
    """Read ``path`` and plan its application to an appliance running ``running``.

    ConfigError for an invalid file; :class:`ReloadRefused` for a change that needs the
    whole appliance.
    """
    new = load_config(path)
    changes = diff_config(running, new)
    refused = [c for c in changes if c.refused]
    if refused:
        raise ReloadRefused("; ".join(str(c) for c in refused))
    try:
        cpu = plan([p.name for p in layout.processes(new)], new.cpu.mode, new.cpu.cores, new.wait)
    except ValueError as exc:
        raise ReloadRefused(str(exc)) from None
    if cpu.strategy != running_cpu.strategy:
        raise ReloadRefused(
            f"the new CPU layout would change every process's wait strategy from "
            f"{running_cpu.strategy.value} to {cpu.strategy.value}"
        )
    restart: dict[str, list[Change]] = {}
    for c in changes:
        if c.restart is not None:
            restart.setdefault(c.restart, []).append(c)
    return ReloadPlan(new, cpu, [c for c in changes if c.live], restart)

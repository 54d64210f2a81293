"""Enums every layer names: the processes an appliance runs and its trading state."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a process of the appliance does. A process's *name* is its role, except agent
    hosts, which are named by the config (``hosts[].name``)."""

    SUPERVISOR = "supervisor"
    FEED = "feed"
    AGENT_HOST = "agent_host"
    EXECUTION = "execution"
    RECORDER = "recorder"


#: Roles with exactly one process, named after the role (configs may name them, e.g. in
#: ``cpu.cores``); agent hosts are named by the config.
SINGLE_ROLES: tuple[Role, ...] = (Role.FEED, Role.EXECUTION, Role.RECORDER)


class TradingState(StrEnum):
    """What pre-trade risk lets through."""

    ACTIVE = "active"
    HALTED = "halted"  # every intent but a CANCEL is rejected with HALTED
    # Only intents that shrink |position| pass (and CANCELs); others REDUCE_ONLY.
    REDUCE_ONLY = "reduce_only"

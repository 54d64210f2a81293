"""Where everything lives: segment names, stats slots and ring reader slots for a config.

The supervisor and every worker derive these from the same config, so nothing about the
layout travels between processes except the config itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Config
from appliance.model.enums import Role
from appliance.model.records import INTENT, POSITION, REPORT, TICK
from appliance.runtime import live_metrics
from appliance.runtime.board import BOARD
from appliance.shm import BroadcastRing, RecordQueue, Stats
from appliance.shm.snapshot import SharedSnapshot

TICKS = "ticks"
STATS = "stats"
# Stats counters, shared by every role (each uses the ones that mean something to it).
COUNTERS = [
    "ticks_in",  # ticks read from the ring (agent hosts, execution, recorder)
    "ticks_out",  # ticks written into the ring (feed)
    "tick_gaps",  # ticks lost to a lapped read
    "signals",  # agent decisions that changed what an agent wants, per tick (hosts)
    "intents",  # intents pushed (hosts: orders, at most one net per agent and batch)
    "feed_gaps",  # GAP ticks (source lost, see TickKind.GAP) written (feed) or read
    "intents_full",  # pushes refused because the intent queue was full
    "reports",  # reports pushed (execution) or consumed (hosts)
    "fills",  # fill reports
    "rejects",  # reject reports
    "duplicates",  # intents seen again after a restart and skipped
    "batches",  # loop iterations that did work
    "errors",  # exceptions caught and reported
    "net_seq",  # cluster workers: JetStream stream sequence last published or taken
    "net_lag",  # cluster workers: stream messages still to take (a level, not a count)
    "net_missing",  # nats feed: ticks missing from its source's numbering (exact count)
]
# Ring reader slots: fixed per role so a restarted reader can find its predecessor's.
EXECUTION_READER, RECORDER_READER, FIRST_HOST_READER = 0, 1, 2


@dataclass(frozen=True)
class Process:
    role: Role
    name: str  # unique, used in logs, stats and the cpu config
    stats_slot: int
    host: int = -1  # agent host index, for role agent_host


def intents_queue(host: int) -> str:
    return f"intents.{host}"


def reports_queue(host: int) -> str:
    return f"reports.{host}"


def positions_snapshot(host: int) -> str:
    return f"positions.{host}"


def processes(config: Config) -> list[Process]:
    """Every worker the supervisor runs, in start order (readers before the feed)."""
    out = [Process(Role.EXECUTION, Role.EXECUTION, 1)] if config.runs_execution else []
    if config.recorder.enabled:
        out.append(Process(Role.RECORDER, Role.RECORDER, 2))
    out += [
        Process(Role.AGENT_HOST, config.hosts[i].name, 3 + i, host=i) for i in config.local_hosts()
    ]
    out += cluster_processes(config)
    out.append(Process(Role.FEED, Role.FEED, 3 + len(config.hosts)))
    return out


def positions_shape(config: Config, host: int) -> tuple[int, int]:
    """(agents, instruments) of host ``host``'s positions snapshot."""
    universe = config.universe()
    return universe.agents.host_agents(host), len(universe.instruments)


SUPERVISOR_SLOT = 0


def stats_slots(config: Config) -> int:
    return 4 + len(config.hosts) + len(CLUSTER_SLOTS)


def shm_bytes(config: Config) -> int:
    """Bytes of shared memory (segments and semaphores) the supervisor creates for config."""
    total = Stats.footprint(stats_slots(config))
    total += BroadcastRing.footprint(TICK, config.ring_capacity)
    for h in queue_hosts(config):
        total += RecordQueue.footprint(INTENT, config.queue_capacity)
        total += RecordQueue.footprint(REPORT, config.queue_capacity)
        total += SharedSnapshot.footprint(POSITION, positions_shape(config, h))
    return total + SharedSnapshot.footprint(BOARD, (1,)) + live_metrics.footprint(config)


# ---- beyond one host (appliance/cluster) ------------------------------------------------

# Stats slots of the cluster workers, after the feed's: 4 + hosts + offset.
CLUSTER_SLOTS = {Role.BRIDGE: 0, Role.GATEWAY: 1, Role.UPLINK: 1}


def cluster_processes(config: Config) -> list[Process]:
    base = 4 + len(config.hosts)
    return [
        Process(Role(name), name, base + CLUSTER_SLOTS[Role(name)])
        for name in config.cluster_workers()
    ]


def host_of_slot(slot: int) -> int:
    """The host index of an agent host's stats slot (see processes)."""
    return slot - 3


def bridge_reader(config: Config) -> int:
    """The bridge's ring reader slot: the first after the agent hosts'."""
    return FIRST_HOST_READER + len(config.hosts)


def queue_hosts(config: Config) -> list[int]:
    """Hosts whose intent and report queues (and positions snapshot) this instance holds:
    all on an instance with execution (remote hosts' through the gateway), the local ones
    on an agents instance (their other end is the uplink)."""
    return list(range(len(config.hosts))) if config.runs_execution else config.local_hosts()


def drainer(config: Config) -> Role:
    """The process that takes every queued intent before a stop: execution, or the uplink
    on an instance without one."""
    return Role.EXECUTION if config.runs_execution else Role.UPLINK

"""Reading a running appliance from outside: processes, ring readers, queue depths, rates.

Everything here is read from shared memory without locks (the stats slots, the ring's
reader slots, the queues' cursors), so watching never slows the appliance down. Used by
`dynamind status` and the TUI.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from appliance.config import Config
from appliance.model.enums import Role
from appliance.model.records import INTENT, REPORT, TICK
from appliance.runtime import layout
from appliance.shm import BroadcastRing, RecordQueue, Stats
from appliance.shm.stats import percentile


@dataclass
class ProcessRow:
    name: str
    role: str
    pid: int
    alive: bool
    state: str
    core: int
    incarnation: int
    heartbeat_age_s: float
    counters: dict[str, int]
    rates: dict[str, float]  # per second since the previous sample
    p50_us: float  # log2-bucket upper bounds of the latency histogram
    p99_us: float


@dataclass
class QueueRow:
    name: str
    head: int
    tail: int
    capacity: int

    @property
    def depth(self) -> int:
        return self.head - self.tail


@dataclass
class Sample:
    taken: float
    processes: list[ProcessRow]
    readers: list[dict[str, Any]]
    queues: list[QueueRow]
    ticks_published: int
    ticks_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class Monitor:
    """Attaches to an instance's segments and samples them on demand."""

    def __init__(self, config: Config) -> None:
        inst = config.instance
        self.config = config
        self.stats = Stats.attach(inst, layout.STATS)
        self.ring = BroadcastRing.attach(inst, layout.TICKS, TICK)
        self.queues: list[tuple[str, RecordQueue]] = []
        for h in layout.queue_hosts(config):
            host = config.hosts[h]
            self.queues.append(
                (f"intents {host.name}", RecordQueue.attach(inst, layout.intents_queue(h), INTENT))
            )
            self.queues.append(
                (f"reports {host.name}", RecordQueue.attach(inst, layout.reports_queue(h), REPORT))
            )
        self._last: tuple[float, int, dict[str, dict[str, int]]] | None = None

    def sample(self) -> Sample:
        now = time.monotonic()
        now_ns = time.monotonic_ns()  # the heartbeat's clock
        slots = self.stats.snapshot()
        published = self.ring.publish_cursor
        prev = self._last
        dt = (now - prev[0]) if prev else 0.0
        rows = []
        for s in slots:
            before = prev[2].get(s["name"], {}) if prev else {}
            rates = {
                k: (v - before.get(k, v)) / dt if dt > 0 else 0.0 for k, v in s["counters"].items()
            }
            rows.append(
                ProcessRow(
                    name=s["name"],
                    role=s["role"],
                    pid=s["pid"],
                    alive=s["alive"],
                    state=s["state"] if s["alive"] else "dead",
                    core=s["core"],
                    incarnation=s["incarnation"],
                    heartbeat_age_s=(now_ns - s["heartbeat_ns"]) / 1e9,
                    counters=s["counters"],
                    rates=rates,
                    p50_us=percentile(s["histogram"], 50) / 1000,
                    p99_us=percentile(s["histogram"], 99) / 1000,
                )
            )
        ticks_per_s = (published - prev[1]) / dt if prev and dt > 0 else 0.0
        self._last = (now, published, {s["name"]: s["counters"] for s in slots})
        return Sample(
            taken=now,
            processes=rows,
            readers=self.ring.readers(),
            queues=[QueueRow(n, q.head, q.tail, q.capacity) for n, q in self.queues],
            ticks_published=published,
            ticks_per_s=ticks_per_s,
        )

    def close(self) -> None:
        for _, q in self.queues:
            q.close()
        self.ring.close()
        self.stats.close()


def reader_name(config: Config, slot: int) -> str:
    """Who a ring reader slot belongs to (slots are fixed per role, see layout.py)."""
    if slot == layout.EXECUTION_READER:
        return Role.EXECUTION
    if slot == layout.RECORDER_READER:
        return Role.RECORDER
    if slot == layout.bridge_reader(config) and config.cluster is not None:
        return Role.BRIDGE
    host = slot - layout.FIRST_HOST_READER
    if 0 <= host < len(config.hosts):
        return config.hosts[host].name
    return f"slot {slot}"


def format_text(sample: Sample, config: Config) -> str:
    """The plain-text status table (what `dynamind status` prints)."""
    lines = [
        f"{'name':<12} {'role':<11} {'pid':>7} {'state':<9} {'core':>4} {'beat':>6} {'inc':>3}"
        f"  {'p99 us':>7}  counters"
    ]
    for p in sample.processes:
        nonzero = " ".join(f"{k}={v}" for k, v in p.counters.items() if v)
        p99 = "" if p.p99_us != p.p99_us else f"{p.p99_us:.0f}"
        lines.append(
            f"{p.name:<12} {p.role:<11} {p.pid:>7} {p.state:<9} {p.core:>4} "
            f"{p.heartbeat_age_s:>5.1f}s {p.incarnation:>3}  {p99:>7}  {nonzero}"
        )
    lines.append("")
    lines.append(f"ring: {sample.ticks_published:,} ticks published")
    for r in sample.readers:
        lines.append(
            f"  reader {reader_name(config, r['slot']):<12} lag {r['lag']:>9,} "
            f"lost {r['lost']:>9,} {'alive' if r['alive'] else 'gone'}"
        )
    for q in sample.queues:
        lines.append(f"queue {q.name:<20} depth {q.depth:>7,} / {q.capacity:,}")
    return "\n".join(lines)

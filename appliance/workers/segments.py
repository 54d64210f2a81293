"""The segments one agent host shares with the execution side, attached from the config:
its intent queue, its report queue and its positions snapshot."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from appliance.config import Config
from appliance.model.records import INTENT, POSITION, REPORT
from appliance.runtime import layout
from appliance.shm import RecordQueue
from appliance.shm.snapshot import SharedSnapshot


@dataclass
class HostSegments:
    intents_q: RecordQueue
    reports_q: RecordQueue
    snapshot: SharedSnapshot

    @classmethod
    def attach(cls, cfg: Config, h: int) -> HostSegments:
        inst = cfg.instance
        shape = layout.positions_shape(cfg, h)
        return cls(
            RecordQueue.attach(inst, layout.intents_queue(h), INTENT),
            RecordQueue.attach(inst, layout.reports_queue(h), REPORT),
            SharedSnapshot.attach(inst, layout.positions_snapshot(h), POSITION, shape),
        )

    def close(self) -> None:
        for seg in (self.intents_q, self.reports_q, self.snapshot):
            seg.close()


def queued_intents(instance: str, hosts: Iterable[int]) -> int:
    """Intents published into these hosts' queues and not yet taken by execution (read
    only: for benches and tests that watch a running appliance from outside)."""
    total = 0
    for h in hosts:
        q = RecordQueue.attach(instance, layout.intents_queue(h), INTENT, read_only=True)
        try:
            total += len(q)
        finally:
            q.close()
    return total

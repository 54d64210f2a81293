"""The segments one agent host shares with the execution side, attached from the config:
its intent queue, its report queue and its positions snapshot."""

from __future__ import annotations

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

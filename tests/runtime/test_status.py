"""The supervisor's status figures on real segments: one scope per line, rates from the
first line."""

from __future__ import annotations

from appliance.model.enums import Role
from appliance.runtime.segments import SegmentSet
from appliance.runtime.status import StatusReporter
from appliance.trading.engine import EngineStatus


def test_counts_are_of_this_start_and_the_first_rate_is_a_figure(config, quotes):
    segments = SegmentSet(config)
    reporter = StatusReporter(segments)
    segments.create()
    try:
        segments.ring.writer().write(quotes([0, 1], [100.0, 10.0], [101.0, 11.0]))
        slot = segments.stats.slot(1, Role.EXECUTION, Role.EXECUTION)
        slot.add(slot.counter("fills"), 5)
        slot.add(slot.counter("rejects"), 2)
        # What execution says of itself: its portfolio's fills since the journal began
        # (600 carried over by an archive, recovered at start), rejects of its process.
        figures = EngineStatus(fills=605, rejects={"MAX_POSITION": 0}, realized=1.0,
                               unrealized=0.5, fees=0.25)  # fmt: skip
        s = reporter.status([], {Role.EXECUTION: figures}, config)
        assert (s["fills"], s["rejects"]) == (5, 2)  # both since this start
        assert s["pnl_net"] == 1.25  # the positions held: the journal's
        assert s["ticks_per_s"] > 0  # 2 ticks since the segments were made
    finally:
        segments.destroy()

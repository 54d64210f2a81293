"""Intents, reports and resets on the wire, and the agents side's report follower."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.cluster.order_wire import (
    MAX_CELLS,
    MAX_INTENTS,
    RUN_BITS,
    ReportFollower,
    decode_events,
    decode_intents,
    events_headers,
    exec_ids,
    host_layout,
    intent_headers,
    reset_messages,
    reset_part,
    run_of,
)
from appliance.cluster.wire import MSG_ID, Run, WireError
from appliance.model.records import INTENT, REPORT

LAYOUT = host_layout("far", [("ema_cross", 40)], ["BTC/USDT"])


def intents(first: int, n: int, host: int = 1) -> np.ndarray:
    out = np.zeros(n, INTENT)
    out["seq"] = np.arange(first, first + n)
    out["host"], out["qty"], out["side"] = host, 0.01, 1
    return out


def reports(first: int, n: int) -> np.ndarray:
    out = np.zeros(n, REPORT)
    out["seq"] = np.arange(first, first + n)
    return out


def test_exec_ids_are_unique_and_ordered_across_runs():
    a, b = exec_ids(7, 3), exec_ids(8, MAX_INTENTS)
    assert a.tolist() == [7 << RUN_BITS, (7 << RUN_BITS) + 1, (7 << RUN_BITS) + 2]
    assert a[-1] < b[0] and run_of(int(b[-1])) == 8
    with pytest.raises(WireError, match="longer"):
        exec_ids(9, MAX_INTENTS + 1)


def test_an_intent_run_is_named_by_its_first_intent_and_decodes_back():
    rows = intents(100, 4)
    headers = intent_headers("agt", "far", 55, rows, LAYOUT)
    assert headers[MSG_ID] == "agt.far.55.100+4"
    run = decode_intents(rows.tobytes(), headers, LAYOUT, 1, "far")
    assert (run.source, run.epoch, run.first, run.end) == ("agt", 55, 100, 104)
    assert run.rows.tobytes() == rows.tobytes()


def test_intents_for_another_layout_or_host_are_refused():
    rows = intents(0, 2)
    other = host_layout("far", [("ema_cross", 41)], ["BTC/USDT"])
    with pytest.raises(WireError, match="same \\[\\[hosts\\]\\]"):
        decode_intents(rows.tobytes(), intent_headers("a", "far", 1, rows, other), LAYOUT, 1, "far")
    with pytest.raises(WireError, match="another host"):
        decode_intents(
            rows.tobytes(), intent_headers("a", "far", 1, rows, LAYOUT), LAYOUT, 2, "far"
        )


def test_events_carry_reports_and_the_taken_watermark():
    rows = reports(10, 3)
    run, taken = decode_events(rows.tobytes(), events_headers("exe", 9, 10, 3, 77, "far"))
    assert (run.epoch, run.first, taken) == (9, 10, 77)


def test_a_reset_in_parts_rebuilds_the_positions_exactly():
    positions = np.zeros((MAX_CELLS + 10, 2))
    positions[:, 1] = np.arange(len(positions)) * 0.001 + 0.0005  # every row non-zero
    parts = reset_messages("exe", 9, 1234, 56, positions, "far", checkpoint=True)
    assert len(parts) == 2
    got = None
    for payload, headers in parts:
        got = reset_part(payload, headers, positions.shape, got)
    assert got.complete and got.checkpoint and (got.epoch, got.head, got.taken) == (9, 1234, 56)
    assert np.array_equal(got.positions, positions)
    # a reader that joins at the second part waits for the next reset
    assert reset_part(parts[1][0], parts[1][1], positions.shape, None) is None
    with pytest.raises(WireError, match="positions table"):
        reset_part(parts[0][0], parts[0][1], (3, 2), None)


def test_the_follower_applies_each_report_once_and_only_after_its_reset():
    f = ReportFollower()
    assert len(f.accept(Run("exe", 9, 0, "", reports(0, 5)))) == 0 and f.stale == 5
    f.reset(9, 3)  # positions include reports 0..2
    assert f.accept(Run("exe", 9, 0, "", reports(0, 5)))["seq"].tolist() == [3, 4]
    assert len(f.accept(Run("exe", 9, 2, "", reports(2, 3)))) == 0  # repeated
    assert f.accept(Run("exe", 9, 8, "", reports(8, 2)))["seq"].tolist() == [8, 9]
    assert f.holes == 3 and f.next_pos == 10

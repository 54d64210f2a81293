"""Bench reports: delivered messages with losses beside; targets met only on clean rows."""

from __future__ import annotations

import argparse
import os
import uuid

from appliance.model.records import TICK
from appliance.shm import BroadcastRing
from bench import ipc, pipeline, results


def test_ring_rate_counts_delivered_records_not_lapped_ones():
    instance = f"tb{os.getpid()}{uuid.uuid4().hex[:6]}"
    ring = BroadcastRing.create(instance, "ring", TICK, 1024)
    try:
        n = 20_000
        # the writer runs first and laps the reader many times over
        ipc.ring_producer(instance, n, 256, "block")()
        got = ipc.ring_consumer(instance, n, 256, "block")()
    finally:
        ring.destroy()
    assert got["lost"] > 0
    assert got["received"] + got["lost"] == n
    assert got["counted"] <= got["received"]  # the rate's numerator: delivered only


def _ipc_row(name: str, rate: int, lost: int) -> dict:
    return {"name": name, "msgs_per_s": rate, "vs_mpq": rate / 1000, "lost": lost, "ok": True,
            "p99_us": 1.0, "strategy": "spin"}  # fmt: skip


def test_ipc_target_is_missed_when_its_row_lost_records():
    rows = [
        _ipc_row("multiprocessing.Queue", 1000, 0),
        _ipc_row("BroadcastRing batch 1024", 10_000_000, 5),
        _ipc_row("BroadcastRing batch 1", 10_000, 0),
    ]
    lat = [
        {**_ipc_row("BroadcastRing claim/publish", 0, 0), "strategy": s} for s in ("spin", "block")
    ]
    targets = {t["target"].split(",")[0]: t for t in ipc._targets(rows, lat)}
    big = targets["BroadcastRing batch 1024 >= 150x mp.Queue"]
    assert not big["met"] and "lost 5" in big["unclean_rows"][0]
    assert targets["BroadcastRing batch 1 >= 2x mp.Queue"]["met"]


def _phase(host_lost: int, exec_lost: int, rate: float) -> dict:
    def reader(lost: int, may: bool) -> dict:
        return {"delivered_per_s": rate, "lost": lost, "discarded": 0, "may_lose": may,
                "clean": lost == 0}  # fmt: skip

    return {
        "readers": {"execution": reader(exec_lost, True), "host-a": reader(host_lost, False)},
        "through_agents_per_s": rate,
        "tick_to_intent_us": {"p99": 50.0},
    }


def test_pipeline_target_needs_every_host_clean_and_names_allowed_losses():
    latency = _phase(0, 0, 1e4)
    ok = pipeline.targets({"paced_1m": _phase(0, 2_900_000, 1e6),
                           "paced_300k": _phase(0, 0, 3e5), "latency_10k": latency})  # fmt: skip
    assert [t["met"] for t in ok] == [True, True, True]
    assert "execution lost 2,900,000 (allowed:" in ok[0]["allowed_losses"][0]
    assert "no reader losing ticks but execution" in ok[0]["target"]
    assert ok[1]["target"].startswith("300,000 ticks/s delivered to every agent host with 10,000")
    bad = pipeline.targets({"paced_1m": _phase(7, 0, 1e6),
                            "paced_300k": _phase(0, 0, 2e5), "latency_10k": latency})  # fmt: skip
    assert not bad[0]["met"] and bad[0]["unclean"] == ["host-a lost 7"]
    assert not bad[1]["met"] and bad[1]["unclean"] == []  # clean, but too slow


def test_results_go_to_the_current_directory_by_default():
    from pathlib import Path

    from appliance.ops.cli import build_parser

    for which in ("ipc", "pipeline", "agents", "ccxt"):
        assert build_parser().parse_args(["bench", which]).out_dir == Path(".")
    parser = argparse.ArgumentParser()
    results.add_out_dir(parser)
    assert parser.parse_args([]).out_dir == Path(".")

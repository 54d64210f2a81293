"""`dynamind bench pipeline`: the whole appliance, feed to agents to paper venue.

Runs the real supervisor and workers in three phases and reads what crossed the process
boundaries from the stats segment and the ring's reader slots:

1. flat out: the feed writes as fast as it can (agent populations of config/examples/
   bench.toml); shows what the agent hosts sustain and how many ticks a writer that never
   waits costs readers that cannot keep up;
2. paced at the throughput target (1,000,000 ticks/s): must pass with no ring gaps;
3. paced at 10,000 ticks/s with the default config's agents: tick-to-intent latency,
   from the tick's recv_ns (stamped by the feed as it writes) to the intent's created_ns
   (stamped by the agent host), recorded per intent batch in each host's histogram.

Results are printed as a table and written as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config, load_config
from appliance.runtime import layout, logs
from appliance.runtime.supervisor import Supervisor
from appliance.shm.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
THROUGHPUT_TARGET = 1_000_000
LATENCY_RATE = 10_000


def _config(base: Path, work: Path, tag: str, **feed: Any) -> Config:
    data = load_config(base).model_dump()
    data["instance"] = f"bench{tag}{int(time.time() * 1000) % 10**8}"
    data["journal_path"] = work / f"{tag}-journal.sqlite"
    data["venue_state_path"] = work / f"{tag}-venue.sqlite"
    data["log_format"] = "text"
    data["status_interval_s"] = 3600.0  # no status lines in the bench output
    data["feed"].update(feed)
    return Config.model_validate(data)


def _sample(sup: Supervisor) -> dict[str, Any]:
    workers = {s["name"]: s for s in sup.stats.snapshot()}
    return {
        "t": time.monotonic(),
        "written": sup.ring.publish_cursor,
        "hosts": {h.name: dict(workers[h.name]["counters"]) for h in sup.config.hosts},
        "hist": {h.name: workers[h.name]["histogram"].copy() for h in sup.config.hosts},
        "execution": dict(workers["execution"]["counters"]),
        "lost": {_reader_name(sup, r["slot"]): r["lost"] for r in sup.ring.readers()},
    }


def _reader_name(sup: Supervisor, slot: int) -> str:
    if slot == layout.EXECUTION_READER:
        return "execution"
    if slot == layout.RECORDER_READER:
        return "recorder"
    return sup.config.hosts[slot - layout.FIRST_HOST_READER].name


def run_phase(config: Config, warmup: float, measure: float) -> dict[str, Any]:
    sup = Supervisor(config)
    sup.install_signals()
    try:
        sup.start()
        sup.watch(warmup)
        a = _sample(sup)
        sup.watch(measure)
        b = _sample(sup)
    finally:
        sup.stop()
    dt = b["t"] - a["t"]
    through = {
        name: (b["hosts"][name]["ticks_in"] - a["hosts"][name]["ticks_in"]) / dt
        for name in b["hosts"]
    }
    gaps = {
        name: b["hosts"][name]["tick_gaps"] - a["hosts"][name]["tick_gaps"] for name in b["hosts"]
    }
    lost = {name: n - a["lost"].get(name, 0) for name, n in b["lost"].items()}
    hosts_lost = sum(lost[h] for h in b["hosts"])
    intents = sum(b["hosts"][n]["intents"] - a["hosts"][n]["intents"] for n in b["hosts"])
    hist = sum(b["hist"][n] - a["hist"][n] for n in b["hist"])
    return {
        "feed_rate": config.feed.rate,
        "agents": sum(p.agents for h in config.hosts for p in h.populations),
        "seconds": round(dt, 2),
        "written_per_s": (b["written"] - a["written"]) / dt,
        "through_agents_per_s": min(through.values()),
        "through_by_host": through,
        "ring_lost_by_reader": lost,
        "hosts_ring_lost": hosts_lost,
        "discarded_batches_records": sum(gaps.values()),
        "intents_per_s": intents / dt,
        "executed_per_s": (b["execution"]["intents"] - a["execution"]["intents"]) / dt,
        "tick_to_intent_us": {f"p{q}": percentile(hist, q) / 1000 for q in (50, 99, 99.9)}
        if hist.sum()
        else {},
        "latency_samples": int(hist.sum()),
    }


def run(quick: bool, out_dir: Path = RESULTS) -> dict[str, Any]:
    warmup, measure = (1.5, 3.0) if quick else (3.0, 10.0)
    work = Path(tempfile.mkdtemp(prefix="dynamind-bench-"))
    bench_cfg = ROOT / "config" / "examples" / "bench.toml"
    default_cfg = ROOT / "config" / "dynamind.toml"
    try:
        phases = {
            "flat_out": run_phase(_config(bench_cfg, work, "a", rate=0), warmup, measure),
            "paced_1m": run_phase(
                _config(bench_cfg, work, "b", rate=THROUGHPUT_TARGET), warmup, measure
            ),
            "latency_10k": run_phase(
                _config(default_cfg, work, "c", rate=LATENCY_RATE, batch_size=64),
                warmup,
                measure,
            ),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    paced = phases["paced_1m"]
    lat = phases["latency_10k"]["tick_to_intent_us"]
    result = {
        "bench": "pipeline",
        "quick": quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "phases": phases,
        "targets": {
            "1M_ticks_per_s_no_gaps": bool(
                paced["through_agents_per_s"] >= 0.99 * THROUGHPUT_TARGET
                and paced["hosts_ring_lost"] == 0
                and paced["discarded_batches_records"] == 0
            ),
            "p99_under_100us_at_10k": bool(lat and lat["p99"] < 100),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"pipeline-{stamp}.json", "pipeline-latest.json"):
        (out_dir / name).write_text(json.dumps(result, indent=2, default=_plain))
    return result


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'phase':<12} {'feed rate':>10} {'agents':>7} {'written/s':>12} {'agents in/s':>12} "
        f"{'hosts lost':>10} {'exec lost':>10} {'intents/s':>10} {'p50 us':>8} {'p99 us':>8} "
        f"{'p99.9 us':>9}"
    )
    for name, p in result["phases"].items():
        lat = p["tick_to_intent_us"]
        rate = "max" if not p["feed_rate"] else f"{p['feed_rate']:,.0f}"
        print(
            f"{name:<12} {rate:>10} {p['agents']:>7} {p['written_per_s']:>12,.0f} "
            f"{p['through_agents_per_s']:>12,.0f} "
            f"{p['hosts_ring_lost'] + p['discarded_batches_records']:>10,} "
            f"{p['ring_lost_by_reader'].get('execution', 0):>10,} "
            f"{p['intents_per_s']:>10,.0f} "
            f"{lat.get('p50', float('nan')):>8.0f} {lat.get('p99', float('nan')):>8.0f} "
            f"{lat.get('p99.9', float('nan')):>9.0f}"
        )
    print("latency percentiles are upper bounds of log2 buckets (the stats histogram)")
    for target, ok in result["targets"].items():
        print(f"target {target}: {'met' if ok else 'NOT met'}")


def quiet_args(prog: str, quick_help: str, argv: list[str] | None) -> argparse.Namespace:
    """A bench's arguments (``--quick``), with every process's logging at WARNING."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    os.environ["DYNAMIND_LOG_LEVEL"] = "WARNING"  # workers inherit it: keep the table clean
    logs.setup("text", level=logging.WARNING, process="bench")
    return args


def stamp(name: str, quick: bool) -> dict[str, Any]:
    """The fields every bench result starts with."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"bench": name, "quick": quick, "time": now}


def save(result: dict[str, Any], name: str) -> Path:
    """Write a bench's result as RESULTS/<name>-latest.json; its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-latest.json"
    path.write_text(json.dumps(result, indent=2, default=_plain))
    return path


def main(argv: list[str] | None = None) -> int:
    args = quiet_args("dynamind bench pipeline", "shorter phases", argv)
    result = run(args.quick)
    print_table(result)
    print(f"written to {RESULTS / 'pipeline-latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

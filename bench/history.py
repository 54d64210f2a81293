"""`dynamind bench history`: can the recorder keep 1 million ticks per second on disk?

Two rows, in one run:

1. writer: the Parquet writer alone (``ParquetRecorder.append`` then ``close``), fed
   synthetic batches of 8,192 ticks as fast as it takes them: ticks per second from the
   first append until every file is closed;
2. appliance: the whole appliance (config/examples/bench.toml with one host of 100 agents,
   so the agents do not take the cores the recorder needs) with the recorder on and the feed
   paced at 1,000,000 ticks/s; what the feed published, what the recorder's ring reader
   lost, and the ticks found in the history folder afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config, load_config
from appliance.feeds.parquet import ParquetDataset, ParquetRecorder
from appliance.feeds.synthetic import SyntheticFeed
from appliance.model.records import TICK
from bench import pipeline, results

ROOT = Path(__file__).resolve().parent.parent
BENCH_CONFIG = ROOT / "config" / "examples" / "bench.toml"
RATE = 1_000_000


def writer_row(work: Path, n: int) -> dict[str, Any]:
    cfg = load_config(BENCH_CONFIG)
    feed = SyntheticFeed(cfg.symbols, seed=3)
    batches = []
    for start in range(0, n, 8192):
        b = np.zeros(8192, TICK)
        feed.fill(b, time.time_ns())
        b["seq"] = np.arange(start, start + 8192)
        batches.append(b)
    rec = ParquetRecorder(
        work / "writer", cfg.universe().instruments,
        {"kind": "synthetic"},
    )  # fmt: skip
    t0 = time.perf_counter()
    for b in batches:
        rec.append(b)
    appended = time.perf_counter() - t0
    rec.close()
    wall = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in rec.files_written)
    return {
        "ticks": rec.rows_written, "seconds": round(wall, 3),
        "ticks_per_s": rec.rows_written / wall, "append_s": round(appended, 3),
        "bytes_per_tick": size / max(1, rec.rows_written), "files": len(rec.files_written),
    }  # fmt: skip


def appliance_config(work: Path) -> Config:
    cfg = pipeline._config(BENCH_CONFIG, work, "h", rate=RATE)
    data = cfg.model_dump()
    data["hosts"] = data["hosts"][:1]
    data["hosts"][0]["populations"][0]["agents"] = 100
    data["recorder"].update(enabled=True, path=work / "history")
    return Config.model_validate(data)


def appliance_row(work: Path, warmup: float, measure: float) -> dict[str, Any]:
    cfg = appliance_config(work)
    phase = pipeline.run_phase("recorder at 1M/s", cfg, warmup, measure)
    recorded = ParquetDataset(work / "history")
    readers = phase["readers"]
    recorder = readers.get("recorder", {})
    return {
        "feed_rate": RATE,
        "written_per_s": phase["written_per_s"],
        "recorder_delivered_per_s": recorder.get("delivered_per_s", 0.0),
        "recorder_ring_lost": recorder.get("lost", 0) + recorder.get("discarded", 0),
        "hosts_ring_lost": sum(
            readers[h.name]["lost"] + readers[h.name]["discarded"] for h in cfg.hosts
        ),
        "ticks_in_history": recorded.count(),
        "gaps_in_history": len(recorded.gaps),
        "seconds": phase["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    args = results.bench_args("dynamind bench history", "a shorter run", argv)
    work = Path(tempfile.mkdtemp(prefix="dynamind-bench-history-"))
    try:
        writer = writer_row(work, 1 << 20 if args.quick else 4 << 20)
        live = appliance_row(work, *((1.5, 3.0) if args.quick else (3.0, 10.0)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {**results.stamp("history", args.quick), "writer": writer, "appliance": live}
    print(
        f"writer: {writer['ticks']:,} ticks in {writer['seconds']:.2f}s = "
        f"{writer['ticks_per_s']:,.0f} ticks/s, {writer['bytes_per_tick']:.1f} bytes/tick"
    )
    print(
        f"appliance at {RATE:,}/s: feed wrote {live['written_per_s']:,.0f}/s, recorder lost "
        f"{live['recorder_ring_lost']:,}, hosts lost {live['hosts_ring_lost']:,}, history "
        f"holds {live['ticks_in_history']:,} ticks with {live['gaps_in_history']} gaps"
    )
    print(f"results: {results.write('history', result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

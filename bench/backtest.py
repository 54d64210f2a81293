"""`dynamind bench backtest`: backtest ticks per second at 1, 100 and 10,000 agents, beside
the live pipeline's flat-out figure, in one run.

The data is a synthetic recording (the synthetic feed's walk over the four symbols of
config/examples/bench.toml, one tick per millisecond of data clock) written as Parquet
history by the recorder's writer, so the backtest reads what a user's history folder
holds. Each row runs `Backtest` (replay, agents, execution, paper venue, SQLite journal,
metrics) over the same ticks with one population of EMA-crossover agents, 256 ticks per
batch, and times the run loop (the report is not timed). The live figure is the pipeline
bench's flat-out phase: the whole multi-process appliance with 10,000 agents.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from appliance.config import Config, load_config
from appliance.feeds.parquet import ParquetRecorder
from appliance.feeds.synthetic import SyntheticFeed
from appliance.model.records import TICK
from appliance.workers.lockstep import Backtest
from bench import pipeline, results

ROOT = Path(__file__).resolve().parent.parent
BENCH_CONFIG = ROOT / "config" / "examples" / "bench.toml"
AGENTS = (1, 100, 10_000)
BATCH = 256
COOLDOWN_S = 5.0
T0 = 1_700_000_000 * 10**9  # the recording's first tick


def make_history(cfg: Config, folder: Path, n: int) -> Path:
    """``n`` synthetic ticks, one per millisecond, written as Parquet history."""
    feed = SyntheticFeed(cfg.symbols, seed=7, volatility=2e-5)
    rec = ParquetRecorder(
        folder, cfg.universe().instruments,
        {"kind": "synthetic", "seed": 7},
    )  # fmt: skip
    for start in range(0, n, 65536):
        batch = np.zeros(min(65536, n - start), TICK)
        feed.fill(batch, 0)
        batch["seq"] = np.arange(start, start + len(batch))
        batch["recv_ns"] = batch["ts_ns"] = T0 + batch["seq"].astype(np.int64) * 1_000_000
        rec.append(batch)
    rec.close()
    return folder


def backtest_config(work: Path, agents: int) -> Config:
    data = load_config(BENCH_CONFIG).model_dump()
    pop = data["hosts"][0]["populations"][0]
    pop["agents"] = agents
    # A holding period on the data clock: without one, 10,000 agents on a noisy walk send
    # an order every few hundred milliseconds each and the run measures the journal only.
    pop["params"]["cooldown_s"] = COOLDOWN_S
    if agents < len(data["symbols"]):
        pop["symbols"] = [data["symbols"][0]["name"]]
        pop["params"]["qty"] = pop["params"]["qty"][:1]
    data["hosts"] = data["hosts"][:1]
    data["feed"].update(kind="replay", path=work / "history", pace="fast", batch_size=BATCH)
    return Config.model_validate(data)


def run_row(work: Path, agents: int, until_ns: int | None = None) -> dict[str, Any]:
    out = work / f"bt-{agents}"
    cfg = backtest_config(work, agents)
    r = Backtest(cfg, work / "history", out, until_ns=until_ns).run()
    m = r.metrics.figures("overall")
    return {
        "agents": agents, "ticks": r.ticks, "seconds": round(r.wall_s, 2),
        "ticks_per_s": r.ticks_per_s, "intents": r.intents,
        "agent_ticks_per_s": r.ticks_per_s * agents, "fills": int(m["orders_filled"][0]),
    }  # fmt: skip


def run(quick: bool) -> dict[str, Any]:
    n = 100_000 if quick else 400_000
    work = Path(tempfile.mkdtemp(prefix="dynamind-bench-bt-"))
    try:
        make_history(load_config(BENCH_CONFIG), work / "history", n)
        run_row(work, 100, until_ns=T0 + 2 * 10**9)  # compiles the kernels: not timed
        rows = [run_row(work, a) for a in AGENTS]
        warmup, measure = (1.5, 3.0) if quick else (3.0, 10.0)
        live = pipeline.run_phase(
            "live flat out", pipeline._config(BENCH_CONFIG, work, "bt", rate=0), warmup, measure
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        **results.stamp("backtest", quick),
        "ticks": n,
        "batch": BATCH,
        "rows": rows,
        "live_flat_out": {
            "agents": live["agents"],
            "ticks_per_s_through_agents": live["through_agents_per_s"],
            "written_per_s": live["written_per_s"],
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = results.bench_args("dynamind bench backtest", "fewer ticks, shorter live phase", argv)
    result = run(args.quick)
    print(f"{'agents':>7} {'ticks':>9} {'seconds':>8} {'ticks/s':>10} {'agent-ticks/s':>14} "
          f"{'intents':>9}")  # fmt: skip
    for r in result["rows"]:
        print(f"{r['agents']:>7,} {r['ticks']:>9,} {r['seconds']:>8.1f} {r['ticks_per_s']:>10,.0f}"
              f" {r['agent_ticks_per_s']:>14,.0f} {r['intents']:>9,}")  # fmt: skip
    live = result["live_flat_out"]
    print(f"live pipeline, flat out, {live['agents']:,} agents: "
          f"{live['ticks_per_s_through_agents']:,.0f} ticks/s through the agents")  # fmt: skip
    print(f"results: {results.write('backtest', result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

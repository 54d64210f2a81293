"""`dynamind bench execution`: intents per second through the whole execution core, beside
the engine of a baseline commit, in one run.

Each row drives one ``ExecutionEngine`` (pre-trade risk, netting and crossing, the paper
venue with its own SQLite file, the journal with its commits, the reports) in one process
on one core: a tick for every symbol before each engine call (quotes refreshed, resting
orders matched), then one batch of MARKET intents of random agents on random symbols and
sides, as a population that decides on every tick sends them. Rows: batches of 1, 64 and
1,024 intents at 100, 10,000 and 100,000 agents over 4 symbols.

The baseline is the same workload on the engine as it was before the execution-core work
(``BASELINE``, read out of the repository's git history into a temporary folder); every
row of both runs in a fresh process, alternating, so both see the same machine. Rates are
intents journaled per second of wall time (duplicates and rejects are journaled rows too,
and the workload has none), calls per second, and journal bytes per intent (the file with
its WAL after the run, over the intents it holds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The last commit before the execution-core work (issue 17): "today's engine".
BASELINE = "08fafe0"
SYMBOLS = 4
LOT = 0.001
AGENTS = (100, 10_000, 100_000)
BATCHES = (1, 64, 1024)


def _intents_for(batch: int, quick: bool) -> int:
    if batch == 1:
        return 1_000 if quick else 4_000
    return (20_000 if quick else 100_000) if batch < 1024 else (50_000 if quick else 300_000)


def row(agents: int, batch: int, intents: int, synchronous: str) -> dict[str, Any]:
    """One row in this process: whatever ``appliance`` this interpreter imports (its
    ``engine`` file is in the result)."""
    import msgspec
    import numpy as np

    from appliance.model.records import INTENT, TICK, OrderType
    from appliance.trading import engine as engine_module
    from appliance.trading.engine import EngineConfig, ExecutionEngine
    from appliance.trading.journal import Journal
    from appliance.trading.risk import RiskLimits
    from appliance.venues.paper import PaperVenue

    names = [f"S{i}/USD" for i in range(SYMBOLS)]
    limits = RiskLimits(max_position=1e12, max_order_notional=1e15)
    with tempfile.TemporaryDirectory(prefix="dynamind-bench-exec-") as tmp:
        journal = Journal(Path(tmp) / "journal.sqlite", synchronous=synchronous)
        venue = PaperVenue(Path(tmp) / "venue.sqlite", SYMBOLS, lot_size=LOT)
        try:
            from appliance.model.universe import Universe
        except ImportError:  # the baseline: symbols, lots and agents apart
            engine = ExecutionEngine(
                names, limits, journal, venue, EngineConfig(lot_size=LOT),
                agents={(0, 0): agents},
            )  # fmt: skip
        else:
            universe = Universe.of(names, LOT, {(0, 0): agents})
            engine = ExecutionEngine(universe, limits, journal, venue)
        engine.recover("bench")
        ticks = np.zeros(SYMBOLS, TICK)
        ticks["symbol"] = np.arange(SYMBOLS)
        ticks["bid_size"] = ticks["ask_size"] = 1e6
        ticks["kind"] = 1
        rng = np.random.default_rng(7)
        calls = -(-intents // batch)
        # Every batch made before timing: the engine's cost only.
        batches = np.zeros((calls, batch), INTENT)
        batches["seq"] = np.arange(calls * batch).reshape(calls, batch)
        batches["agent"] = rng.integers(0, agents, (calls, batch))
        batches["symbol"] = rng.integers(0, SYMBOLS, (calls, batch))
        batches["side"] = rng.choice(np.array([-1, 1], np.int8), (calls, batch))
        batches["qty"] = LOT * rng.integers(1, 10, (calls, batch))
        batches["order_type"] = OrderType.MARKET
        mids = 100.0 + np.cumsum(rng.normal(0, 0.01, (calls, SYMBOLS)), axis=0)
        reports = 0
        warm = min(calls // 10, 20)  # the first calls load the compiled kernels: not timed
        started = 0.0
        for k in range(calls):
            if k == warm:
                started = time.perf_counter()
            ticks["bid"] = mids[k] - 0.005
            ticks["ask"] = mids[k] + 0.005
            ticks["last_price"] = mids[k]
            for rep in engine.on_ticks(ticks).values():
                reports += len(rep)
            for rep in engine.process(batches[k]).values():
                reports += len(rep)
        seconds = time.perf_counter() - started
        status = engine.status()
        if not isinstance(status, dict):  # the baseline's was a dict, ours a struct
            status = msgspec.structs.asdict(status)
        engine.close()
        size = sum(p.stat().st_size for p in Path(tmp).glob("journal.sqlite*"))
    done = (calls - warm) * batch
    return {
        "agents": agents, "batch": batch, "intents": done, "calls": calls - warm,
        "seconds": round(seconds, 3), "intents_per_s": done / seconds,
        "calls_per_s": (calls - warm) / seconds, "reports": reports, "fills": status["fills"],
        "venue_orders": status["venue_orders"], "rejects": sum(status["rejects"].values()),
        "journal_bytes_per_intent": size / (calls * batch),
        "engine": engine_module.__file__,
    }  # fmt: skip


def _baseline_tree(ref: str, into: Path) -> Path | None:
    """The ``appliance`` package of ``ref`` under ``into``; None when git cannot give it."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "appliance"],
            capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return into


def _run_row(code: Path | None, agents: int, batch: int, n: int, sync: str) -> dict[str, Any]:
    """``row`` in a fresh interpreter, importing ``appliance`` from ``code`` (None: ours)."""
    env = dict(os.environ)
    path = [str(ROOT)] if code is None else [str(code), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    args = [str(agents), str(batch), str(n), sync]
    # Not from ROOT: ``-m`` puts the working directory first on the path, before the
    # baseline's folder, and the baseline row would import this tree's engine.
    proc = subprocess.run(
        [sys.executable, "-m", "bench.execution", "--row", *args],
        capture_output=True, text=True, env=env, cwd=tempfile.gettempdir(), timeout=1800,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"bench row {args} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, synchronous: str, baseline: str | None) -> dict[str, Any]:
    from bench import results

    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dynamind-bench-base-") as tmp:
        base = _baseline_tree(baseline, Path(tmp)) if baseline else None
        for agents in AGENTS[:2] if quick else AGENTS:
            for batch in BATCHES:
                n = _intents_for(batch, quick)
                ours = _run_row(None, agents, batch, n, synchronous)
                theirs = _run_row(base, agents, batch, n, synchronous) if base else None
                r = {**ours, "baseline": theirs}
                if theirs:
                    r["vs_baseline"] = ours["intents_per_s"] / theirs["intents_per_s"]
                print(_line(r), file=sys.stderr, flush=True)
                rows.append(r)
    return {
        **results.stamp("execution", quick),
        "synchronous": synchronous,
        "baseline": baseline if base else None,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "rows": rows,
        "targets": _targets(rows),
    }


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    big = [r["intents_per_s"] for r in rows if r["batch"] == 1024]
    one = [r["calls_per_s"] for r in rows if r["batch"] == 1]
    return [
        {"target": ">= 250,000 intents/s at batches of 1,024", "worst": min(big),
         "met": min(big) >= 250_000},
        {"target": ">= 20,000 engine calls/s at batches of 1", "worst": min(one),
         "met": min(one) >= 20_000},
        {"target": "<= 120 journal bytes per intent",
         "worst": max(r["journal_bytes_per_intent"] for r in rows),
         "met": max(r["journal_bytes_per_intent"] for r in rows) <= 120},
    ]  # fmt: skip


def _line(r: dict[str, Any]) -> str:
    base = r["baseline"]
    tail = (
        f"  baseline {base['intents_per_s']:>10,.0f}/s {base['calls_per_s']:>8,.0f} calls/s"
        f" {base['journal_bytes_per_intent']:>5,.0f} B  x{r['vs_baseline']:.2f}"
        if base
        else ""
    )
    return (
        f"{r['agents']:>7,} {r['batch']:>5} {r['intents_per_s']:>10,.0f}/s "
        f"{r['calls_per_s']:>8,.0f} calls/s {r['journal_bytes_per_intent']:>5,.0f} B{tail}"
    )


def main(argv: list[str] | None = None) -> int:
    from bench import results

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--row"]:  # one row, in this process (see _run_row)
        agents, batch, n, sync = argv[1:5]
        print(json.dumps(row(int(agents), int(batch), int(n), sync)))
        return 0
    parser = argparse.ArgumentParser(prog="dynamind bench execution")
    parser.add_argument("--quick", action="store_true", help="fewer intents, no 100,000 row")
    parser.add_argument(
        "--synchronous", choices=("FULL", "NORMAL"), default="FULL",
        help="the journal's fsync mode: FULL as a live appliance, NORMAL as a backtest",
    )  # fmt: skip
    parser.add_argument("--baseline", default=BASELINE, help="git ref of the baseline engine")
    results.add_out_dir(parser)
    args = parser.parse_args(argv)
    result = run(args.quick, args.synchronous, args.baseline or None)
    print(f"journal synchronous={result['synchronous']}, baseline {result['baseline']}")
    print(f"{'agents':>7} {'batch':>5} {'intents/s':>12} {'calls/s':>16} {'B/intent':>7}")
    for r in result["rows"]:
        print(_line(r))
    for t in result["targets"]:
        print(f"{'met' if t['met'] else 'MISSED':>6}  {t['target']} (worst {t['worst']:,.0f})")
    print(f"results: {results.write('execution', result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`dynamind bench agents`: agent-tick updates per second with per-tick decisions.

For each built-in kind and 1,000 / 10,000 / 100,000 agents over 4 symbols, on one core
(the numba backend), through the population's full step: prepare (copy out of the tick
records), kernel (every agent decides on every tick of its symbol), intents (built and
written as INTENT records) and reports (every intent filled back). Beside it, in the same
run, a bare per-tick numba loop of the EMA-crossover maths (update both EMAs, decide,
count crossings; nothing else): the ceiling a population could reach.

An agent-tick update is one agent taking one tick of its symbol: ticks x agents / 4.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from numba import njit

from appliance.agents import POPULATIONS, make_population
from appliance.model.records import INTENT, REPORT, TICK, ReportKind
from bench import results

SIZES = (1_000, 10_000, 100_000)
SYMBOLS = 4
BATCH = 1024
PARAMS = {
    "ema_cross": {"fast": [5, 20], "slow": [50, 200]},
    "mean_reversion": {"lookback": [20, 200], "entry": [1.5, 3.0], "exit": 0.5},
    "breakout": {"window": [20, 200]},
    "market_making": {"qty": 1.0, "max_inventory": 5.0},
}


def ticks(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros(n, TICK)
    out["symbol"] = rng.integers(0, SYMBOLS, n)
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 2e-4, n)))
    out["bid"], out["ask"] = mid - 0.01, mid + 0.01
    out["recv_ns"] = np.arange(n)
    return out


@njit(cache=True)
def bare_ema_loop(symbol, mid, alpha_f, alpha_s, fast, slow, starts, stops):
    """The same maths with nothing around it: per tick, per agent of the tick's symbol."""
    crossings = 0
    for i in range(len(symbol)):
        g = symbol[i]
        m = mid[i]
        for j in range(starts[g], stops[g]):
            fast[j] += alpha_f[j] * (m - fast[j])
            slow[j] += alpha_s[j] * (m - slow[j])
            up = fast[j] > slow[j]
            crossings += up != (fast[j] - alpha_f[j] * (m - fast[j]) > slow[j])
    return crossings


def run_bare(n_agents: int, data: np.ndarray, seconds: float) -> float:
    rng = np.random.default_rng(0)
    af = 2.0 / (rng.integers(5, 21, n_agents) + 1.0)
    as_ = 2.0 / (rng.integers(50, 201, n_agents) + 1.0)
    fast, slow = np.full(n_agents, 100.0), np.full(n_agents, 100.0)
    bounds = (np.arange(SYMBOLS + 1) * n_agents) // SYMBOLS
    sym = data["symbol"].astype(np.int64)
    mid = (data["bid"] + data["ask"]) * 0.5
    bare_ema_loop(sym[:10], mid[:10], af, as_, fast, slow, bounds[:-1], bounds[1:])
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        bare_ema_loop(sym, mid, af, as_, fast, slow, bounds[:-1], bounds[1:])
        done += len(sym)
    return done * n_agents / SYMBOLS / (time.perf_counter() - t0)


def run_population(kind: str, n_agents: int, data: np.ndarray, seconds: float) -> dict[str, Any]:
    pop = make_population(kind, n_agents, range(SYMBOLS), PARAMS[kind], 1, "numba")
    buf = np.zeros(pop.intents_per_agent * n_agents, INTENT)
    reports = np.zeros(len(buf), REPORT)
    done, t0, batches = 0, None, 0
    while t0 is None or time.perf_counter() - t0 < seconds:
        for start in range(0, len(data), BATCH):
            view = data[start : start + BATCH]
            out = pop.step(pop.prepare(view), 0)
            k = len(out)
            out.write(buf, population=0, host=0, created_ns=0)
            r = reports[:k]  # every intent is filled back, in one report
            r["agent"], r["side"], r["fill_qty"] = out.agent, out.side, out.qty
            r["kind"], r["final"] = ReportKind.FILL, 1
            pop.on_reports(r)
            done += len(view)
            batches += 1
        if t0 is None:  # the first pass compiles and warms up
            t0, done = time.perf_counter(), 0
    dt = time.perf_counter() - t0
    c = pop.counters
    return {
        "updates_per_s": done * n_agents / SYMBOLS / dt,
        "ticks_per_s": done / dt,
        "signals": c["signals"],
        "intents": c["intents"],
    }


def run(quick: bool) -> dict[str, Any]:
    seconds = 0.5 if quick else 2.0
    data = ticks(4 * BATCH if quick else 16 * BATCH)
    rows = []
    for n in SIZES:
        bare = run_bare(n, data, seconds)
        for kind in POPULATIONS:
            r = run_population(kind, n, data, seconds)
            rows.append({"kind": kind, "agents": n, "bare_ema_per_s": bare, **r,
                         "vs_bare": r["updates_per_s"] / bare})  # fmt: skip
    by = {(r["kind"], r["agents"]): r for r in rows}
    linear = {
        k: by[(k, SIZES[0])]["updates_per_s"] / by[(k, SIZES[-1])]["updates_per_s"]
        for k in POPULATIONS
    }
    return {
        "bench": "agents",
        "quick": quick,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "batch": BATCH,
        "rows": rows,
        "slowdown_1k_to_100k": linear,
        "targets": {
            "ema_half_of_bare_at_10k": bool(by[("ema_cross", 10_000)]["vs_bare"] >= 0.5),
            "within_2x_of_linear": bool(all(v <= 2.0 for v in linear.values())),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynamind bench agents")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    results.add_out_dir(parser)
    args = parser.parse_args(argv)
    result = run(args.quick)
    print(f"{'kind':<15} {'agents':>7} {'updates/s':>14} {'bare EMA/s':>14} {'vs bare':>8} "
          f"{'signals':>10} {'intents':>9}")  # fmt: skip
    for r in result["rows"]:
        print(f"{r['kind']:<15} {r['agents']:>7,} {r['updates_per_s']:>14,.0f} "
              f"{r['bare_ema_per_s']:>14,.0f} {r['vs_bare']:>8.2f} {r['signals']:>10,} "
              f"{r['intents']:>9,}")  # fmt: skip
    for k, v in result["slowdown_1k_to_100k"].items():
        print(f"{k}: per-update cost at 100k agents is {v:.2f}x that at 1k (linear: 1.00)")
    for target, ok in result["targets"].items():
        print(f"target {target}: {'met' if ok else 'NOT met'}")
    print(f"results: {results.write('agents', result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`dynamind bench ccxt`: ticks per second through the ccxt feed, and where the time goes.

Starts `dynamind exchange-sim --pace fast` (a separate process, looping the Binance.US
capture as fast as its clients read) and runs the ccxt feed (real ccxt.pro binanceus,
four symbols: best bid/ask and trades) in this process under cProfile for a fixed time.
It counts the TICK records the feed produced and splits the profile's own time (tottime)
by where the code lives: ccxt (message handling and parsing, with the JSON decoding ccxt
asks for), ours (appliance/), the websocket transport (aiohttp, yarl, multidict), the
asyncio event loop, and the rest. Results are printed and written to --out-dir (default:
the current directory).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from appliance.exsim import client_urls
from appliance.feeds.ccxt_feed import CcxtFeed
from appliance.markets import ExchangeSettings, make_exchange
from appliance.model.instruments import Instrument
from appliance.model.records import TickKind
from bench import results

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "binance-us"
INSTRUMENTS = [  # name, lot, tick
    Instrument("CRV/USDT", 0.1, 0.001),
    Instrument("COMP/USDT", 0.001, 0.01),
    Instrument("OMG/BUSD", 0.01, 0.0001),
    Instrument("ZRX/USDT", 0.01, 0.0001),
]
GROUPS = [
    ("ccxt (parsing, caches, futures)", re.compile(r"/ccxt/|[\\/]json[\\/]|orjson")),
    ("ours (appliance/)", re.compile(r"/appliance/")),
    ("websocket transport (aiohttp, yarl, multidict)", re.compile(r"/(aiohttp|yarl|multidict)/")),
    ("asyncio event loop", re.compile(r"/asyncio/|selectors\.py")),
]


def _start_sim() -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "appliance.ops.cli", "exchange-sim", "--data", str(DATA),
           "--port", "0", "--pace", "fast", "--start-delay", "0.5"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    m = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if not m:
        proc.kill()
        raise RuntimeError("exchange-sim did not start")
    return proc, int(m[1])


async def _run_feed(port: int, seconds: float) -> dict[str, Any]:
    exchange = make_exchange(ExchangeSettings("binanceus", client_urls(port)), pro=True)
    feed = CcxtFeed(exchange, INSTRUMENTS)
    await feed.start()
    ticks = kinds_trade = 0
    t0 = None
    try:
        async for batch in feed.batches():
            if len(batch) and t0 is None:
                t0 = time.perf_counter()  # from the first tick: the replay's start delay out
            ticks += len(batch)
            kinds_trade += int((batch["kind"] == TickKind.TRADE).sum())
            if t0 is not None and time.perf_counter() - t0 >= seconds:
                break
    finally:
        await feed.close()
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    return {"ticks": ticks, "trades": kinds_trade, "seconds": elapsed, "gaps": feed.gaps}


def _shares(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile)
    totals = dict.fromkeys([g for g, _ in GROUPS] + ["other"], 0.0)
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        group = next((g for g, rx in GROUPS if rx.search(filename)), "other")
        totals[group] += tottime
    whole = sum(totals.values()) or 1.0
    return {g: t / whole for g, t in totals.items()}


def run(seconds: float) -> dict[str, Any]:
    proc, port = _start_sim()
    try:
        plain = asyncio.run(_run_feed(port, seconds))  # unprofiled: the rate
        profile = cProfile.Profile()
        profile.enable()
        profiled = asyncio.run(_run_feed(port, seconds))
        profile.disable()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "ticks_per_s": plain["ticks"] / plain["seconds"],
        "plain": plain,
        "profiled": profiled,
        "time_share": _shares(profile),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dynamind bench ccxt")
    parser.add_argument("--quick", action="store_true", help="5 s instead of 20 s per run")
    results.add_out_dir(parser)
    args = parser.parse_args(argv)
    r = run(5.0 if args.quick else 20.0)
    p = r["plain"]
    print(f"ccxt feed from exchange-sim (fast pace): {r['ticks_per_s']:,.0f} ticks/s "
          f"({p['ticks']:,} ticks, {p['trades']:,} trades in {p['seconds']:.1f} s, "
          f"{p['gaps']} gaps)")  # fmt: skip
    print("share of the feed process's time (profiled run, tottime by code location):")
    for group, share in r["time_share"].items():
        print(f"  {group:<48} {share:6.1%}")
    print(f"results: {results.write('ccxt-feed', r, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

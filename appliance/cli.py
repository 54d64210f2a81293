"""The `dynamind` command: run, check-config, status, bench."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from appliance import logs

DEFAULT_CONFIG = os.environ.get("DYNAMIND_CONFIG", "config/dynamind.toml")

log = logging.getLogger("dynamind")


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.supervisor import Supervisor

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config, nothing started:\n{exc}", file=sys.stderr)
        return 2
    if args.log_format:
        config = config.model_copy(update={"log_format": args.log_format})
    logs.setup(config.log_format, process="supervisor")
    return Supervisor(config, args.config).run(args.duration)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    agents = sum(p.agents for h in config.hosts for p in h.populations)
    print(
        f"{args.file}: ok (instance {config.instance}, {len(config.symbols)} symbols, "
        f"{len(config.hosts)} agent hosts, {agents} agents, feed {config.feed.kind})"
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.layout import STATS
    from appliance.shm import SegmentError, Stats

    try:
        instance = load_config(args.config).instance
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        stats = Stats.attach(instance, STATS)
    except SegmentError as exc:
        print(f"no running appliance {instance!r}: {exc}", file=sys.stderr)
        return 1
    try:
        while True:
            _print_status(stats)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        stats.close()


def _print_status(stats) -> None:
    from appliance.shm.stats import percentile

    now = time.time_ns()
    print(f"{'name':<12} {'role':<11} {'pid':>7} {'state':<9} {'beat':>6} {'inc':>3}  counters")
    for s in stats.snapshot():
        nonzero = " ".join(f"{k}={v}" for k, v in s["counters"].items() if v)
        p99 = percentile(s["histogram"], 99)
        lat = "" if p99 != p99 else f" p99<={p99 / 1000:.0f}us"
        print(
            f"{s['name']:<12} {s['role']:<11} {s['pid']:>7} "
            f"{s['state'] if s['alive'] else 'dead':<9} "
            f"{(now - s['heartbeat_ns']) / 1e9:>5.1f}s {s['incarnation']:>3}  {nonzero}{lat}"
        )


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.which == "ipc":
        from bench import ipc

        return ipc.main(["--quick"] if args.quick else [])
    from bench import pipeline

    return pipeline.main(["--quick"] if args.quick else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynamind", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the appliance (supervisor and workers)")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML config file")
    run.add_argument("--duration", type=float, help="stop cleanly after this many seconds")
    run.add_argument("--log-format", choices=["text", "json"], help="override log_format")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file, list every error")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_cmd_check_config)

    status = sub.add_parser("status", help="show the running appliance's processes")
    status.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    status.add_argument("--watch", type=float, metavar="S", help="refresh every S seconds")
    status.set_defaults(func=_cmd_status)

    bench = sub.add_parser("bench", help="benchmarks (results under bench/results/)")
    bench.add_argument("which", choices=["ipc", "pipeline"])
    bench.add_argument("--quick", action="store_true", help="a shorter run")
    bench.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logs.setup("text", level=logging.WARNING, process="dynamind")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

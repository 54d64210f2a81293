"""The `dynamind` command: run, check-config, status, top, bench, nats."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from appliance.runtime import logs

DEFAULT_CONFIG = os.environ.get("DYNAMIND_CONFIG", "config/dynamind.toml")

log = logging.getLogger("dynamind")


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.runtime.supervisor import Supervisor
    from appliance.trading.journal import LayoutMismatch

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config, nothing started:\n{exc}", file=sys.stderr)
        return 2
    if args.log_format:
        config = config.model_copy(update={"log_format": args.log_format})
    logs.setup(config.log_format, process="supervisor")
    try:
        return Supervisor(config, args.config).run(args.duration)
    except LayoutMismatch as exc:
        print(f"nothing started: {exc}", file=sys.stderr)
        return 2


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


def _monitor(config_path: str):
    from appliance.config import ConfigError, load_config
    from appliance.ops.monitor import Monitor
    from appliance.shm import SegmentError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    try:
        return Monitor(config)
    except SegmentError as exc:
        print(f"no running appliance {config.instance!r}: {exc}", file=sys.stderr)
        return None


def _cmd_status(args: argparse.Namespace) -> int:
    from appliance.ops.cluster_view import format_cluster
    from appliance.ops.monitor import format_text

    monitor = _monitor(args.config)
    if monitor is None:
        return 1
    try:
        monitor.sample()  # a baseline for the rates
        while True:
            time.sleep(args.watch or 0.5)
            sample = monitor.sample()
            text = [format_text(sample, monitor.config), *format_cluster(sample, monitor.config)]
            print("\n".join(text), flush=True)
            if not args.watch:
                return 0
            print()
    except KeyboardInterrupt:
        return 0
    finally:
        monitor.close()


def _cmd_top(args: argparse.Namespace) -> int:
    from appliance.ops import tui

    monitor = _monitor(args.config)
    if monitor is None:
        return 1
    try:
        tui.run(monitor, args.interval)
    finally:
        monitor.close()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.which == "ipc":
        from bench import ipc

        return ipc.main(["--quick"] if args.quick else [])
    if args.which == "cluster":
        from bench import cluster

        return cluster.main(["--quick"] if args.quick else [])
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

    top = sub.add_parser("top", help="live terminal view of the running appliance (q quits)")
    top.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    top.add_argument("--interval", type=float, default=1.0, metavar="S")
    top.set_defaults(func=_cmd_top)

    bench = sub.add_parser("bench", help="benchmarks (results under bench/results/)")
    bench.add_argument("which", choices=["ipc", "pipeline", "cluster"])
    bench.add_argument("--quick", action="store_true", help="a shorter run")
    bench.set_defaults(func=_cmd_bench)

    nats = sub.add_parser(
        "nats", help="run a JetStream server on 127.0.0.1 (nats-server from the wheel)"
    )
    nats.add_argument("--dir", type=Path, default=Path("var/nats"), help="storage directory")
    nats.add_argument("--port", type=int, default=4222)
    nats.add_argument("--http-port", type=int, default=8222, help="monitoring port")
    nats.set_defaults(func=_cmd_nats)
    return p


def _cmd_nats(args: argparse.Namespace) -> int:
    from appliance.cluster.server import NatsServerError, main_foreground

    try:
        return main_foreground(args.dir, args.port, args.http_port)
    except NatsServerError as exc:
        print(exc, file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logs.setup("text", level=logging.WARNING, process="dynamind")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

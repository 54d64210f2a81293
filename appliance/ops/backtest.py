"""`dynamind backtest`: load the config for recorded data, run it, write the report."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from appliance.config import Config, ConfigError, load_config
from appliance.feeds.sources import SourceError
from appliance.ops.journal_views import ViewError, parse_time
from appliance.ops.report import write_report
from appliance.workers.lockstep import Backtest, BacktestResult


class BacktestError(RuntimeError):
    """A backtest that cannot run; the message says why."""


def backtest_config(path: str | Path, data: str | Path, seed: int | None = None) -> Config:
    """The config at ``path`` with its feed replaced by a replay of ``data``."""
    feed: dict = {"kind": "replay", "path": str(data), "pace": "fast", "loop": False}
    if seed is not None:
        feed["seed"] = seed
    try:
        # A backtest trades on the paper venue, whatever the config trades on live.
        return load_config(path, overrides={"feed": feed, "execution": {"venue": "paper"}})
    except ConfigError as exc:
        raise BacktestError(f"config {path} with --data {data}:\n{exc}") from None


def run(
    config: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    since: str | None = None,
    until: str | None = None,
    seed: int | None = None,
    show_progress: bool = False,
) -> BacktestResult:
    """Run a backtest and write its report into ``out``."""
    cfg = backtest_config(config, data, seed)
    _check_out(out)
    try:
        since_ns = parse_time(since) if since else None
        until_ns = parse_time(until) if until else None
        bt = Backtest(cfg, data, out, since_ns, until_ns)
    except (ViewError, SourceError) as exc:
        raise BacktestError(str(exc)) from None
    try:
        result = _with_progress(bt) if show_progress else bt.run()
    except ValueError as exc:
        raise BacktestError(str(exc)) from None
    write_report(result)
    return result


def _check_out(out: str | Path) -> None:
    """The report folder exists (made if need be) and takes files: else BacktestError, before
    anything runs."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise BacktestError(
            f"--out {out}: cannot write the report there ({exc.strerror or exc})"
        ) from None


def _with_progress(bt: Backtest) -> BacktestResult:
    columns = (
        TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TextColumn("ticks"),
        TextColumn("{task.fields[rate]:>10,.0f} ticks/s"), TextColumn("ETA"),
        TimeRemainingColumn(),
    )  # fmt: skip
    with Progress(*columns, console=None, transient=False) as progress:
        task = progress.add_task("run", total=bt.total or None, rate=0.0)

        def update(done: int, total: int) -> None:
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = done / elapsed if elapsed > 0 else 0.0
            progress.update(task, completed=done, rate=rate)

        result = bt.run(update)
        progress.update(task, completed=result.ticks, total=result.ticks, rate=result.ticks_per_s)
    return result


def main(args: argparse.Namespace) -> int:
    r = run(
        args.config, args.data, args.out, since=args.since, until=args.until, seed=args.seed,
        show_progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip
    m = r.metrics.figures("overall")
    print(
        f"{r.ticks:,} ticks in {r.wall_s:.1f}s ({r.ticks_per_s:,.0f} ticks/s), {r.intents:,} "
        f"intents; net {m['net'][0]:,.2f} (gross {m['gross'][0]:,.2f}, fees {m['fees'][0]:,.2f})"
    )
    if r.dropped:
        print(f"dropped {sum(r.dropped.values()):,} records no market prints: "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(r.dropped.items())))  # fmt: skip
    print(f"report: {Path(r.out) / 'index.html'} (summary.json, plots, journal.sqlite)")
    return 0

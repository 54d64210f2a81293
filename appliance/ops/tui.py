"""`dynamind top`: a live Textual view of a running appliance.

It keeps running when the appliance stops (a banner says so and the tables empty) and
picks the appliance up again when it starts. Columns that do not fit the terminal are
dropped, least important first, so 80 columns show the essentials. ``?`` lists the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Static

from appliance.ops import cluster_view
from appliance.ops.monitor import (
    Monitor,
    ProcessRow,
    Sample,
    core_text,
    p99_text,
    state_text,
    summary_lines,
)
from appliance.ops.trading_view import COLUMNS as METRIC_COLUMNS
from appliance.ops.trading_view import table_rows

CELL_PADDING = 1  # DataTable's default: one space each side of a cell


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    priority: int  # 0: always shown; higher: dropped first when the terminal is narrow
    cell: Callable[[ProcessRow], str]


PROCESS_COLUMNS = (
    Column("name", "name", 12, 0, lambda p: p.name),
    Column("state", "state", 8, 0, state_text),
    Column("ticks", "ticks/s", 9, 1, lambda p: f"{max(p.rates['ticks_in'], p.rates['ticks_out']):,.0f}"),  # noqa: E501
    Column("intents", "intents/s", 9, 1, lambda p: f"{p.rates['intents']:,.0f}"),
    Column("restarts", "restarts", 8, 1, lambda p: str(p.restarts)),
    Column("beat", "beat", 5, 2, lambda p: f"{p.heartbeat_age_s:.1f}s"),
    Column("fills", "fills", 9, 2, lambda p: f"{p.counters['fills']:,}"),
    Column("rejects", "rejects", 8, 3, lambda p: f"{p.counters['rejects']:,}"),
    Column("core", "core", 4, 3, lambda p: core_text(p.core)),
    Column("p99", "p99", 8, 4, p99_text),
    Column("pid", "pid", 7, 4, lambda p: str(p.pid)),
    Column("role", "role", 11, 5, lambda p: p.role),
    Column("reports", "reports/s", 9, 5, lambda p: f"{p.rates['reports']:,.0f}"),
    Column("gaps", "gaps", 7, 5, lambda p: f"{p.counters['tick_gaps']:,}"),
)  # fmt: skip

KEYS = """\
 q   quit
 r   refresh now
 ?   this list (any key closes it)

 The banner on top says when the appliance is not running;
 top waits for it and picks it up again when it starts.
 Columns that do not fit are dropped: widen the terminal to see
 core, p99, pid, role, reports/s and gaps."""


#: Metric columns dropped first when the terminal is narrow (highest first); the rest stay.
_METRIC_PRIORITY = {"net": 0, "fees": 1, "orders": 1, "sharpe": 2, "max dd": 2, "gross": 3,
                    "fill %": 3, "rej %": 4, "acc %": 4}  # fmt: skip


def metric_layout(rows: list[tuple[str, list[str]]], width: int) -> tuple[tuple[str, int], ...]:
    """(label, width) of the metrics table's columns for ``rows`` in ``width`` cells: each
    as wide as its widest cell (never cut: "-14,72" for -14,729.69, or two agents both shown
    as "bottom host-a.0.1"), dropping the least important figures first when they do not
    fit. The first is the row names'."""
    names = max([len("metrics"), *(len(n) for n, _ in rows)])
    cols = [
        (label, max([len(label), *(len(cells[i]) for _, cells in rows)]))
        for i, (label, _) in enumerate(METRIC_COLUMNS)
    ]
    while len(cols) > 1 and names + sum(w + 2 * CELL_PADDING for _, w in cols) + 2 > width:
        worst = max(cols, key=lambda c: (_METRIC_PRIORITY.get(c[0], 5), cols.index(c)))
        if _METRIC_PRIORITY.get(worst[0], 5) == 0:
            break
        cols.remove(worst)
    return (("metrics", names), *cols)


def fitting(columns: tuple[Column, ...], width: int) -> list[Column]:
    """The columns to show in ``width`` terminal cells: drop the least important first."""
    chosen = list(columns)
    while len(chosen) > 1:
        used = sum(c.width + 2 * CELL_PADDING for c in chosen)
        if used <= width:
            break
        worst = max(chosen, key=lambda c: (c.priority, columns.index(c)))
        if worst.priority == 0:
            break
        chosen.remove(worst)
    return chosen


class KeysScreen(ModalScreen[None]):
    """The list of keys; any key or click closes it."""

    DEFAULT_CSS = """
    KeysScreen { align: center middle; }
    #keys { width: auto; height: auto; border: round $accent; padding: 1 2; }
    """

    def compose(self) -> ComposeResult:
        yield Static(KEYS, id="keys")

    def on_key(self) -> None:
        self.dismiss()

    def on_click(self) -> None:
        self.dismiss()


class StatusApp(App):
    """Summary, processes, ring readers and queues, refreshed every ``interval`` seconds."""

    TITLE = "dynamind"
    CSS = """
    #banner { background: $error; color: $text; padding: 0 1; display: none; }
    #summary { margin: 0 1 1 1; }
    DataTable { height: auto; margin-bottom: 1; }
    """
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh_now", "Refresh"),
        Binding("question_mark", "keys", "Keys", key_display="?"),
    ]

    def __init__(self, monitor: Monitor, interval: float = 1.0) -> None:
        super().__init__()
        self.monitor = monitor
        self.interval = interval
        self.last: Sample | None = None
        self.columns_shown: list[Column] = []
        self.metric_columns: tuple[tuple[str, int], ...] = ()

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield Static(id="banner")
        yield Static(id="summary")
        with Vertical(id="tables"):
            yield DataTable(id="metrics", zebra_stripes=True, cursor_type="none")
            yield DataTable(id="processes", zebra_stripes=True, cursor_type="none")
            yield DataTable(id="readers", cursor_type="none")
            yield DataTable(id="queues", cursor_type="none")
            yield DataTable(id="cluster", cursor_type="none")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.monitor.instance
        self._fit_columns()
        readers = self.query_one("#readers", DataTable)
        readers.add_column("ring reader", width=12)
        for label in ("lag", "lost", "gaps"):
            readers.add_column(label, width=11)
        queues = self.query_one("#queues", DataTable)
        queues.add_column("queue", width=20)
        for label in ("depth", "capacity", "pushed"):
            queues.add_column(label, width=11)
        self.query_one("#cluster", DataTable).add_columns(*cluster_view.COLUMNS)
        self.action_refresh_now()
        self.set_interval(self.interval, self.action_refresh_now)

    def on_resize(self) -> None:
        if self._fit_columns() and self.last is not None:
            self._show(self.last)

    def _fit_columns(self) -> bool:
        """Choose the process columns for the current width; True if they changed."""
        shown = fitting(PROCESS_COLUMNS, max(20, self.size.width - 2))
        if shown == self.columns_shown:
            return False
        self.columns_shown = shown
        table = self.query_one("#processes", DataTable)
        table.clear(columns=True)
        for c in shown:
            table.add_column(c.label, width=c.width, key=c.key)
        return True

    def action_keys(self) -> None:
        self.push_screen(KeysScreen())

    def action_refresh_now(self) -> None:
        self.last = self.monitor.sample()
        self._show(self.last)

    def _show(self, s: Sample) -> None:
        banner = self.query_one("#banner", Static)
        if s.banner:
            banner.update(s.banner if s.running else f"{s.banner}; waiting for it to start")
        banner.display = bool(s.banner)
        lines = summary_lines(s)
        if s.banner and lines and lines[0] == s.banner:
            lines = lines[1:]
        self.query_one("#summary", Static).update("\n".join(lines))
        self.query_one("#tables").display = s.running
        procs = self.query_one("#processes", DataTable)
        procs.clear()
        readers = self.query_one("#readers", DataTable)
        readers.clear()
        queues = self.query_one("#queues", DataTable)
        queues.clear()
        cluster = self.query_one("#cluster", DataTable)
        cluster.clear()
        metrics = self.query_one("#metrics", DataTable)
        metrics.clear()
        if not s.running:
            return  # no rows stuck at "dead": the banner says what happened
        rows = table_rows(s.metrics) if s.metrics else []
        layout = metric_layout(rows, max(20, self.size.width - 2))
        if layout != self.metric_columns:  # widths follow the figures: rebuild the columns
            self.metric_columns = layout
            metrics.clear(columns=True)
            for label, width in layout:
                metrics.add_column(label, width=width)
        shown = [[label for label, _ in METRIC_COLUMNS].index(lb) for lb, _ in layout[1:]]
        for name, cells in rows:
            metrics.add_row(name, *(cells[i] for i in shown))
        for p in s.processes:
            cells = [c.cell(p) for c in self.columns_shown]
            if not p.alive:
                cells[1] = f"[red]{cells[1]}[/]"
            procs.add_row(*cells)
        for r in s.readers:
            readers.add_row(r.name, f"{r.lag:,}", f"{r.lost:,}", f"{r.gaps:,}")
        for q in s.queues:
            queues.add_row(q.name, f"{q.depth:,}", f"{q.capacity:,}", f"{q.head:,}")
        for row in cluster_view.cluster_rows(s):
            cluster.add_row(*row)


def run(monitor: Monitor, interval: float = 1.0) -> None:
    StatusApp(monitor, interval).run()

"""`dynamind top`: a live Textual view of a running appliance (q quits)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, Header, Static

from appliance.ops import cluster_view
from appliance.ops.monitor import Monitor, Sample, reader_name

PROCESS_COLUMNS = (
    "name", "role", "pid", "state", "core", "beat", "restarts",
    "ticks/s", "intents/s", "reports/s", "fills", "rejects", "gaps", "p99 us",
)  # fmt: skip


class StatusApp(App):
    """Processes, ring readers and queues, refreshed every ``interval`` seconds."""

    TITLE = "dynamind"
    CSS = """
    DataTable { height: auto; margin-bottom: 1; }
    #summary { margin: 0 1 1 1; }
    """
    BINDINGS = [("q", "quit", "Quit"), ("r", "refresh_now", "Refresh")]

    def __init__(self, monitor: Monitor, interval: float = 1.0) -> None:
        super().__init__()
        self.monitor = monitor
        self.interval = interval
        self.last: Sample | None = None

    def compose(self) -> ComposeResult:
        yield Header(show_clock=True)
        yield Static(id="summary")
        yield DataTable(id="processes", zebra_stripes=True)
        yield DataTable(id="readers")
        yield DataTable(id="queues")
        yield DataTable(id="cluster")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.monitor.config.instance
        self.query_one("#processes", DataTable).add_columns(*PROCESS_COLUMNS)
        self.query_one("#readers", DataTable).add_columns("ring reader", "lag", "lost", "gaps")
        self.query_one("#queues", DataTable).add_columns("queue", "depth", "capacity", "pushed")
        self.query_one("#cluster", DataTable).add_columns(*cluster_view.COLUMNS)
        self.action_refresh_now()
        self.set_interval(self.interval, self.action_refresh_now)

    def action_refresh_now(self) -> None:
        s = self.monitor.sample()
        self.last = s
        self.query_one("#summary", Static).update(
            f"ring: {s.ticks_published:,} ticks published, {s.ticks_per_s:,.0f}/s"
        )
        procs = self.query_one("#processes", DataTable)
        procs.clear()
        for p in s.processes:
            c, r = p.counters, p.rates
            state = p.state if p.heartbeat_age_s < 2 or not p.alive else f"{p.state} (stale)"
            procs.add_row(
                p.name, p.role, str(p.pid),
                f"[red]{state}[/]" if not p.alive else state,
                str(p.core) if p.core >= 0 else "-",
                f"{p.heartbeat_age_s:.1f}s", str(max(0, p.incarnation - 1)),
                f"{max(r['ticks_in'], r['ticks_out']):,.0f}", f"{r['intents']:,.0f}",
                f"{r['reports']:,.0f}", f"{c['fills']:,}", f"{c['rejects']:,}",
                f"{c['tick_gaps']:,}", "-" if p.p99_us != p.p99_us else f"{p.p99_us:,.0f}",
            )  # fmt: skip
        readers = self.query_one("#readers", DataTable)
        readers.clear()
        for rd in s.readers:
            name = reader_name(self.monitor.config, rd["slot"])
            readers.add_row(name, f"{rd['lag']:,}", f"{rd['lost']:,}", f"{rd['gaps']:,}")
        queues = self.query_one("#queues", DataTable)
        queues.clear()
        for q in s.queues:
            queues.add_row(q.name, f"{q.depth:,}", f"{q.capacity:,}", f"{q.head:,}")
        cluster = self.query_one("#cluster", DataTable)
        cluster.clear()
        for row in cluster_view.cluster_rows(s, self.monitor.config):
            cluster.add_row(row.name, row.what, row.per_s, row.total, row.lag, row.gaps, row.p99_us)


def run(monitor: Monitor, interval: float = 1.0) -> None:
    StatusApp(monitor, interval).run()

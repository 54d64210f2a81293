"""`dynamind status` and `dynamind top` against a real running appliance."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from textual.widgets import DataTable, Static

from appliance.model.records import TICK
from appliance.ops.monitor import (
    Monitor,
    ProcessRow,
    Sample,
    format_text,
    p99_text,
    summary_lines,
)
from appliance.ops.tui import (
    METRIC_COLUMNS,
    PROCESS_COLUMNS,
    KeysScreen,
    StatusApp,
    fitting,
    metric_layout,
)
from appliance.runtime import layout
from appliance.runtime.board import Board
from appliance.runtime.exits import Exit
from appliance.shm import BroadcastRing, Stats
from appliance.shm.files import shm_path
from appliance.shm.segment import list_names
from tests.harness import dynamind


def test_status_shows_trading_state_pnl_and_processes(app):
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "fills") > 0, what="fills")
    # the board has execution's figures after its next status interval
    app.wait_for(
        lambda: "(fees " in dynamind("status", "-c", str(app.config)).stdout, what="pnl in status"
    )
    res = dynamind("status", "-c", str(app.config))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("trading: active\njournal: pnl net ")
    assert "(fees " in out and "restarts" in out and " inc " not in out
    for name in ("supervisor", "feed", "host-a", "host-b", "execution"):
        assert name in out
    assert "ring reader host-a" in out and "queue intents host-b" in out

    monitor = Monitor.open(app.instance)
    try:
        for _ in range(200):  # lag is read consistently: never negative
            s = monitor.sample()
            assert all(r.lag >= 0 for r in s.readers)
        assert {p.name for p in s.processes} >= {"feed", "execution", "host-a", "host-b"}
        assert all(p.restarts == 0 for p in s.processes)
        assert format_text(s).startswith("trading: active")
    finally:
        monitor.close()

    # piped to head: no BrokenPipeError when head has read enough
    res = subprocess.run(
        f"{sys.executable} -m appliance.ops.cli status -c {app.config} --watch 0.1 | head -n 2; "
        "exit ${PIPESTATUS[0]}",
        shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.startswith("trading: ")

    # halting by reload: status says halted, and why
    app.config.write_text(app.config.read_text() + '\n[trading]\nstate = "halted"\n')
    assert dynamind("reload", "-c", str(app.config)).returncode == 0
    app.wait_for(
        lambda: (
            "halted (reload: trading.state active -> halted)"
            in dynamind("status", "-c", str(app.config)).stdout
        ),
        what="halted in status",
    )
    assert app.stop() == 0


def test_status_without_a_running_appliance_says_so(tmp_path):
    from tests.harness import write_config

    path, instance = write_config(tmp_path)
    res = dynamind("status", "-c", str(path))
    assert res.returncode == Exit.NOT_RUNNING
    assert f"no running appliance {instance!r}" in res.stderr


def test_columns_fit_an_80_column_terminal():
    shown = fitting(PROCESS_COLUMNS, 78)
    assert sum(c.width + 2 for c in shown) <= 78
    assert [c.key for c in shown][:2] == ["name", "state"]
    assert {"ticks", "intents", "restarts"} <= {c.key for c in shown}
    assert len(fitting(PROCESS_COLUMNS, 200)) == len(PROCESS_COLUMNS)


def _rows(tui: StatusApp) -> list[str]:
    table = tui.query_one("#processes", DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def _until(pilot, holds, seconds: float = 60.0) -> None:
    """Let the app refresh until `holds()` (a loaded machine may need many refreshes)."""
    deadline = time.monotonic() + seconds
    while not holds() and time.monotonic() < deadline:
        await pilot.pause(0.2)


def test_top_survives_the_appliance_stopping_and_reattaches(app):
    app.start().wait_ready()
    monitor = Monitor(app.instance)

    async def drive() -> None:
        tui = StatusApp(monitor, interval=0.2)
        async with tui.run_test(size=(80, 24)) as pilot:
            await _until(pilot, lambda: tui.last is not None and (tui.last.ticks_per_s or 0) > 0)
            assert {"supervisor", "feed", "host-a", "host-b", "execution"} <= set(_rows(tui))
            assert tui.query_one("#queues", DataTable).row_count == 4
            assert tui.last is not None and (tui.last.ticks_per_s or 0) > 0
            assert not tui.query_one("#banner", Static).display
            width = sum(c.width + 2 for c in tui.columns_shown)
            assert width <= 80

            await pilot.press("question_mark")
            await pilot.pause(0.2)
            assert isinstance(tui.screen, KeysScreen)
            await pilot.press("x")
            await pilot.pause(0.2)
            assert not isinstance(tui.screen, KeysScreen)

            assert app.stop() == 0
            banner = tui.query_one("#banner", Static)
            await _until(pilot, lambda: banner.display and _rows(tui) == [])
            assert banner.display and "stopped at" in str(banner.render())
            assert _rows(tui) == []  # no rows stuck at "dead"

            app.start().wait_ready()
            await _until(pilot, lambda: "host-a" in _rows(tui))
            assert {"feed", "host-a", "host-b", "execution"} <= set(_rows(tui))
            assert not tui.query_one("#banner", Static).display
            await pilot.press("q")

    try:
        asyncio.run(drive())
    finally:
        monitor.close()
    assert app.stop() == 0


TMUX = shutil.which("tmux")


@pytest.mark.skipif(TMUX is None, reason="tmux is missing (apt-get install tmux; make test does)")
def test_top_in_a_real_terminal(app, tmp_path):
    session = f"dm{app.instance}"
    app.start().wait_ready()
    cmd = f"{sys.executable} -m appliance.ops.cli top -c {app.config} --interval 0.3"
    subprocess.run(
        [TMUX, "-S", str(tmp_path / "tmux.sock"), "new-session", "-d", "-s", session,
         "-x", "80", "-y", "30", cmd],
        check=True, cwd=app.dir,
    )  # fmt: skip

    def screen() -> str:
        return subprocess.run(
            [TMUX, "-S", str(tmp_path / "tmux.sock"), "capture-pane", "-p", "-t", session],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    def wait_screen(text: str) -> str:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            shown = screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never on screen:\n{shown}")

    try:
        shown = wait_screen("host-a")
        assert "trading: active" in shown
        assert all(len(line) <= 80 for line in shown.splitlines())
        assert app.stop() == 0
        shown = wait_screen("stopped at")
        assert "waiting for it to start" in " ".join(shown.split())
        app.start().wait_ready()
        wait_screen("trading: active")
        assert "host-b" in wait_screen("host-b") and "stopped at" not in screen()
    finally:
        subprocess.run([TMUX, "-S", str(tmp_path / "tmux.sock"), "kill-server"], check=False)
    assert app.stop() == 0


def test_status_and_top_show_the_live_trading_metrics(app):
    app.start().wait_ready()
    monitor = Monitor.open(app.instance)
    try:
        app.wait_for(
            lambda: (m := monitor.sample().metrics) is not None and m["overall"][0]["orders"] > 0,
            what="live metrics published",
        )
        out = dynamind("status", "-c", str(app.config)).stdout
        table = out[out.index("\nmetrics ") + 1 :].splitlines()
        assert table[0].split()[:4] == ["metrics", "net", "gross", "fees"]
        assert table[1].split()[0] == "overall"
        assert any(line.startswith("pop host-b.0 ") for line in table)
        assert any(line.startswith("top host-") for line in table)
        assert any(line.startswith("bottom host-") for line in table)

        async def drive() -> list[str]:
            tui = StatusApp(monitor, interval=0.2)
            async with tui.run_test(size=(120, 40)) as pilot:
                t = tui.query_one("#metrics", DataTable)

                def shown() -> list[str]:
                    return [str(t.get_row_at(i)[0]) for i in range(t.row_count)]

                await _until(pilot, lambda: "pop host-a.0" in shown())
                names = shown()
                await pilot.press("q")
            return names

        names = asyncio.run(drive())
        assert names[0] == "overall" and "pop host-a.0" in names
    finally:
        monitor.close()
    assert app.stop() == 0


def test_summary_keeps_one_scope_per_line():
    execution = ProcessRow("execution", "execution", 1, True, "running", -1, 0, 0.1,
                           {"fills": 5145, "rejects": 12}, {}, 1.0, 2.0)  # fmt: skip
    overall = {"name": "overall", "net": -4515.19, "fees": 80.5, "orders": 26176, "rejects": 6678}
    sample = Sample(
        taken=0.0, running=True, processes=[execution], ticks_published=100,
        board={"trading": "active", "realized": -4000.0, "unrealized": -276.9, "fees": 80.5,
               "fills": 32823, "rejects": 0, "open_orders": 3},
        metrics={"overall": [overall], "populations": [], "symbols": [], "top": [],
                 "bottom": []},
    )  # fmt: skip
    lines = summary_lines(sample)
    # The journal's figures are the metrics table's overall row, on the same screen...
    assert lines[1] == "journal: pnl net -4,515.19 (fees 80.50), orders 26,176, rejects 6,678"
    # ...the counts since this start are execution's counters, as in the process table.
    assert lines[2] == "since this start: fills 5,145, rejects 12, open orders 3"
    # One sample makes no rate: no 0 that reads as a figure.
    assert lines[3] == "ring: 100 ticks published, -/s"


def test_latency_percentiles_show_as_the_bounds_they_are():
    """A log2 histogram knows a percentile's bucket, not its value: status, top and the
    cluster view show its ceiling as a bound with a unit, never as an exact count of us."""
    def row(p99_us: float) -> ProcessRow:
        return ProcessRow("execution", "execution", 1, True, "running", -1, 0, 0.1, {}, {},
                          p99_us / 2, p99_us)  # fmt: skip

    assert [p99_text(row(us)) for us in (float("nan"), 65.536, 1048.576, 1073741.824)] == [
        "-", "<=66us", "<=1.1ms", "<=1.08s"
    ]
    sample = Sample(taken=0.0, running=True, processes=[row(274877906.944)], ticks_published=0)
    text = format_text(sample)
    assert "<=274.88s" in text and "274,877,907" not in text


def test_the_metrics_table_drops_columns_but_never_cuts_a_figure():
    rows = [
        ("overall", ["-14,729.69", "-12,000.00", "2,729.69", "-1.23", "15,001.00", "98.1",
                     "1.9", "51.2", "1,234,567"]),
        ("bottom host-a.0.16", ["-1.00"] * 9),
        ("bottom host-a.0.17", ["-2.00"] * 9),
    ]  # fmt: skip
    for width in (80, 120, 200):
        layout = metric_layout(rows, width)
        assert layout[0] == ("metrics", len("bottom host-a.0.16"))
        assert sum(w + 2 for _, w in layout) <= width or len(layout) == 2
        labels = [label for label, _ in METRIC_COLUMNS]
        for label, w in layout[1:]:
            i = labels.index(label)
            assert w >= max(len(cells[i]) for _, cells in rows), (width, label)
        assert layout[1][0] == "net"
    assert len(metric_layout(rows, 200)) == 1 + len(METRIC_COLUMNS)
    assert len(metric_layout(rows, 80)) < len(metric_layout(rows, 120))


def test_a_segment_cut_short_under_the_monitor_is_let_go_not_a_crash():
    """Touching the pages of a truncated mapping is SIGBUS: the monitor checks the files
    before each look, says which segment is short, and attaches again later."""
    inst = f"tt{os.getpid()}{uuid.uuid4().hex[:6]}"
    made = [
        Stats.create(inst, layout.STATS, 2, layout.COUNTERS),
        Board.create(inst),
        BroadcastRing.create(inst, layout.TICKS, TICK, 1024),
    ]
    m = Monitor(inst)
    try:
        assert m.sample().running
        ring = shm_path(f"/{inst}.{layout.TICKS}")
        os.truncate(ring, os.stat(ring).st_size // 2)
        s = m.sample()  # would have been killed by SIGBUS reading the ring's cursors
        assert not s.running and f"{inst}.{layout.TICKS} is " in s.banner, s.banner
        assert "not read" in s.banner
    finally:
        m.close()
        for seg in reversed(made):
            seg.destroy()
    assert not list_names(inst)

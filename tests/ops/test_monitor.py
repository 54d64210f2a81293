"""`dynamind status` and `dynamind top` against a real running appliance."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from textual.widgets import DataTable

from appliance.config import load_config
from appliance.ops.monitor import Monitor, format_text
from appliance.ops.tui import StatusApp


def test_status_and_tui_show_the_running_processes(app):
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "intents") > 0, what="intents")
    monitor = Monitor(load_config(app.config))
    app.wait_for(
        lambda: (t := monitor.sample().trading) is not None and t["overall"][0]["orders"] > 0,
        what="live metrics published",
    )
    res = subprocess.run(
        [sys.executable, "-m", "appliance.ops.cli", "status", "-c", str(app.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for name in ("supervisor", "feed", "host-a", "host-b", "execution"):
        assert name in res.stdout
    assert "reader host-a" in res.stdout and "queue intents host-b" in res.stdout
    trading = res.stdout[res.stdout.index("\ntrading ") + 1 :].splitlines()
    assert trading[1].split()[0] == "overall" and "fees" in trading[0].split()
    assert any(line.startswith("pop host-b.0:ema_cross") for line in trading)
    assert any(line.startswith("top host-") for line in trading)

    try:
        first = monitor.sample()
        assert {p.name for p in first.processes} >= {"feed", "execution", "host-a", "host-b"}
        assert all(p.alive for p in first.processes)
        text = format_text(first, monitor.config)
        assert "ring:" in text

        async def drive() -> list[str]:
            tui = StatusApp(monitor, interval=0.2)
            async with tui.run_test() as pilot:
                await pilot.pause(0.6)
                table = tui.query_one("#processes", DataTable)
                names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
                assert tui.query_one("#queues", DataTable).row_count == 4
                trading = tui.query_one("#trading", DataTable)
                assert str(trading.get_row_at(0)[0]) == "overall" and trading.row_count >= 3
                assert tui.last is not None and tui.last.ticks_per_s > 0
                await pilot.press("q")
            return names

        names = asyncio.run(drive())
        assert {"supervisor", "feed", "host-a", "host-b", "execution"} <= set(names)
    finally:
        monitor.close()
    assert app.stop() == 0


def test_status_without_a_running_appliance_says_so(tmp_path):
    from tests.harness import write_config

    path, instance = write_config(tmp_path)
    res = subprocess.run(
        [sys.executable, "-m", "appliance.ops.cli", "status", "-c", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    assert f"no running appliance {instance!r}" in res.stderr

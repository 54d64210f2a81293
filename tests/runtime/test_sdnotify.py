"""The sd_notify protocol, received on a real unix datagram socket as systemd would."""

from __future__ import annotations

import os
import signal
import time

import pytest

from appliance.runtime.exits import Exit
from appliance.runtime.sdnotify import Notifier
from tests.harness import Appliance, NotifySocket, dynamind


@pytest.fixture
def notify(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    yield sock
    sock.close()


def test_reload_is_announced_with_monotonic_usec_then_ready(notify):
    n = Notifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloaded("reload rejected: bad file")
    _, first = notify.wait_for(lambda m: "RELOADING" in m)
    assert first["RELOADING"] == "1"
    assert before <= int(first["MONOTONIC_USEC"]) <= after
    _, second = notify.wait_for(lambda m: "READY" in m)
    assert second == {"READY": "1", "STATUS": "reload rejected: bad file"}


def test_abstract_socket_names_work(monkeypatch):
    name = f"@dynamind-test-{os.getpid()}"
    sock = NotifySocket(name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        Notifier().status("hello")
        _, msg = sock.wait_for(lambda m: "STATUS" in m)
        assert msg == {"STATUS": "hello"}
    finally:
        sock.close()


def test_appliance_speaks_the_protocol_and_a_rejected_reload_is_visible(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    app = Appliance(tmp_path)
    try:
        app.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        sock.wait_for(lambda m: m.get("READY") == "1")
        _, status = sock.wait_for(lambda m: "ticks_per_s=" in m.get("STATUS", ""))
        assert "trading=active" in status["STATUS"] and "pnl_net=" in status["STATUS"]

        # a good reload through the CLI systemd's ExecReload runs: waits, says what changed
        text = app.config.read_text()
        app.config.write_text(text.replace("rate = 4000", "rate = 3000"))
        t0 = time.monotonic()
        res = dynamind("reload", "-c", str(app.config))
        assert res.returncode == Exit.OK, res.stderr
        assert "1 change(s) applied" in res.stdout
        t_rel, rel = sock.wait_for(lambda m: "RELOADING" in m, after=t0)
        sock.wait_for(lambda m: m.get("READY") == "1", after=t_rel)
        assert int(rel["MONOTONIC_USEC"]) > 0
        app.wait_for_log("feed rate now 3000")
        log = app.log_path.read_text()  # a reload logs what changed, and only that
        assert "applied live: feed.rate: 4000.0 -> 3000.0" in log
        assert "risk limits reloaded" not in log and "trading state" not in log

        # a rejected one: the CLI fails, STATUS= names it (and keeps naming it), status shows it
        app.config.write_text(text.replace("ring_capacity = 16384", "ring_capacity = 3"))
        t0 = time.monotonic()
        res = dynamind("reload", "-c", str(app.config))
        assert res.returncode == Exit.CONFIG, res.stdout + res.stderr
        assert "reload rejected" in res.stderr and "ring_capacity" in res.stderr
        t_rel, _ = sock.wait_for(lambda m: "RELOADING" in m, after=t0)
        _, ready = sock.wait_for(lambda m: m.get("READY") == "1", after=t_rel)
        assert "reload REJECTED" in ready["STATUS"] and "ring_capacity" in ready["STATUS"]
        _, later = sock.wait_for(lambda m: "ticks_per_s=" in m.get("STATUS", ""), after=t_rel)
        assert "reload REJECTED" in later["STATUS"]
        shown = dynamind("status", "-c", str(app.config))
        assert "last reload" in shown.stdout and "reload rejected" in shown.stdout

        # JSON logs carry the status figures as numbers
        lines = [x for x in app.log_lines() if x["msg"] == "status"]
        assert lines and isinstance(lines[-1]["ticks_per_s"], int)
        assert isinstance(lines[-1]["pnl_net"], float) and lines[-1]["trading"] == "active"
        assert app.stop() == 0
        sock.wait_for(lambda m: m.get("STOPPING") == "1")
    finally:
        app.kill_all()
        sock.close()


def test_watchdog_stops_while_a_worker_hangs(tmp_path):
    sock = NotifySocket(tmp_path / "notify.sock")
    # the supervisor must not fix the hang itself here: only systemd's watchdog would
    app = Appliance(tmp_path, heartbeat_timeout_s=600)
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"}
    try:
        app.start(env=env).wait_ready()
        t_ready, _ = sock.wait_for(lambda m: m.get("READY") == "1")
        sock.wait_for(lambda m: m.get("WATCHDOG") == "1", after=t_ready)
        pid = app.workers()["host-b"]["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            # on a loaded machine another worker may be named late for a moment first
            t_held, _ = sock.wait_for(
                lambda m: "watchdog withheld" in (s := m.get("STATUS", "")) and "host-b" in s
            )
            # pings are every 0.5 s (half of WATCHDOG_USEC); none may come while it hangs
            time.sleep(2.0)
            pings = [t for t, m in sock.received() if m.get("WATCHDOG") == "1" and t > t_held]
            assert pings == []
        finally:
            os.kill(pid, signal.SIGCONT)
        sock.wait_for(lambda m: m.get("WATCHDOG") == "1", after=time.monotonic())
        assert app.stop() == 0
    finally:
        app.kill_all()
        sock.close()

"""The supervisor as operators meet it: config checks, signals, restarts, instance lock."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from appliance.runtime.exits import Exit
from appliance.shm import list_names
from tests.harness import Appliance, NotifySocket, assert_intents_accounted, dynamind


def test_check_config_lists_every_error_and_run_refuses(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'instance = "x y"\nring_capacity = 1000\nbogus = 1\n'
        '[[symbols]]\nname = "BTC/USDT"\nstart_price = -1\ntick_size = 0.01\n'
        "lot_size = 0.1\nmax_position = 1\nmax_order_notional = 1\n"
        '[[hosts]]\nname = "h"\n[[hosts.populations]]\nkind = "ema_cross"\nagents = 5\n'
    )
    res = dynamind("check-config", str(bad))
    assert res.returncode == Exit.CONFIG
    for where in ("instance", "ring_capacity", "bogus", "symbols[0].start_price"):
        assert f"{bad}: {where}" in res.stderr, res.stderr
    run = dynamind("run", "--config", str(bad), "--duration", "1", cwd=tmp_path)
    assert run.returncode == Exit.CONFIG
    assert "nothing started" in run.stderr
    assert not (tmp_path / "var").exists()


def test_check_config_accepts_the_shipped_configs():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("config/dynamind.toml", "config/examples/bench.toml"):
        res = dynamind("check-config", os.path.join(root, name))
        assert res.returncode == 0, res.stderr
        assert ": ok" in res.stdout


def _shm_files(instance: str) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of an instance in /dev/shm."""
    out = {}
    for name in list_names(instance):
        st = os.stat(f"/dev/shm/{name}")
        out[name] = (st.st_ino, st.st_mtime_ns)
    return out


def test_second_instance_is_refused_naming_the_owner(app, tmp_path):
    app.start().wait_ready()
    before = {n: ino for n, (ino, _) in _shm_files(app.instance).items()}
    res = dynamind("run", "--config", str(app.config), "--duration", "1", cwd=tmp_path)
    assert res.returncode == Exit.ALREADY_RUNNING
    out = res.stdout + res.stderr
    assert f"instance {app.instance} is already running (pid {app.proc.pid})" in res.stderr, out
    assert "Traceback" not in out
    # It did not stop anything or remove segments: nothing of the running one is its own.
    assert "segments removed" not in out and "stopping" not in out.lower(), out
    after = {n: ino for n, (ino, _) in _shm_files(app.instance).items()}
    assert after == before, "the running appliance's segments were touched"
    assert app.proc.poll() is None, "the running appliance must be untouched"
    app.wait_for(lambda: app.counter("execution", "intents") > 0, what="still trading")
    assert app.stop() == 0
    assert_intents_accounted(app)


def test_killed_supervisor_takes_its_children_and_next_start_reclaims(app):
    app.start().wait_ready()
    pids = [w["pid"] for w in app.workers().values() if w["role"] != "supervisor"]
    app._stats.close()
    app._stats = None
    app.proc.kill()
    app.proc.wait(10)
    _, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 30)
    assert alive == [], f"orphans: {alive}"
    assert list_names(app.instance), "a SIGKILLed supervisor cannot have unlinked anything"
    res = dynamind("status", "-c", str(app.config))  # says it died, not that it stopped
    assert res.returncode == Exit.NOT_RUNNING
    assert "ended without a stop" in res.stdout and "stopped at" not in res.stdout
    app.start("--duration", "2")
    assert app.proc.wait(120) == 0, app.log_tail()
    text = app.log_path.read_text()
    assert "reclaiming stale segment" in text
    # what a crash leaves is said in a line or two, not a line per file (47 lines before)
    reclaims = [line for line in text.splitlines() if "WARNING" in line and "reclaim" in line]
    assert 1 <= len(reclaims) <= 2, reclaims


def test_restart_intensity_limit_halts_with_nonzero_exit(tmp_path):
    app = Appliance(tmp_path, max_restarts=2)
    notify = NotifySocket(tmp_path / "notify.sock")
    try:
        app.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}).wait_ready()
        for incarnation in (2, 3):
            app.kill("feed")
            app.wait_restarted("feed", incarnation)
        app.kill("feed")
        code = app.proc.wait(120)
        assert code == Exit.HALTED, app.log_tail()
        assert "halting: 3 restarts" in app.log_path.read_text()
        # while it stopped, it said so: halted, not active
        _, msg = notify.wait_for(lambda m: m.get("STATUS", "").startswith("HALTED: 3 restarts"))
        assert "a person must look" in msg["STATUS"]
    finally:
        app.kill_all()
        notify.close()
    assert app.leftovers() == []


@pytest.mark.parametrize("app", [{"heartbeat_timeout_s": 3.0}], indirect=True)
def test_stalled_worker_is_killed_and_restarted(app):
    app.start().wait_ready()
    pid = app.workers()["host-b"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    app.wait_restarted("host-b", 2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert "missed heartbeats" in app.log_path.read_text()
    assert app.stop() == 0
    assert_intents_accounted(app)


def test_sighup_applies_live_changes_and_rejects_bad_files(app):
    app.start().wait_ready()
    text = app.config.read_text()
    app.config.write_text(text.replace("rate = 4000", "rate = 1000"))
    app.proc.send_signal(signal.SIGHUP)
    app.wait_for(lambda: "applied live: feed.rate" in app.log_path.read_text(), what="reload")
    app.wait_for(lambda: "feed rate now 1000" in app.log_path.read_text(), what="feed rate")
    app.config.write_text(
        text.replace("rate = 4000", "rate = 1000") + '\n[trading]\nstate = "halted"\n'
    )
    app.proc.send_signal(signal.SIGHUP)
    app.wait_for_log("trading halted: reload: trading.state active -> halted")
    rejects = app.counter("execution", "rejects")
    app.wait_for(lambda: app.counter("execution", "rejects") > rejects + 5, what="HALTED rejects")
    app.config.write_text(text.replace("ring_capacity = 16384", "ring_capacity = 3"))
    app.proc.send_signal(signal.SIGHUP)
    app.wait_for(lambda: "reload rejected" in app.log_path.read_text(), what="bad reload rejected")
    time.sleep(0.5)
    assert app.proc.poll() is None
    assert app.stop() == 0


def test_config_contradicting_open_positions_starts_nothing_and_names_the_way_out(app, tmp_path):
    app.start("--duration", "3")
    assert app.proc.wait(120) == 0, app.log_tail()
    text = app.config.read_text()
    # a lot size change under open positions would misread every journaled fill
    app.config.write_text(text.replace("lot_size = 0.00001", "lot_size = 0.001"))
    res = dynamind("run", "--config", str(app.config), "--duration", "1", cwd=tmp_path)
    assert res.returncode == Exit.JOURNAL_CONFLICT
    assert "nothing started" in res.stderr and "BTC/USDT" in res.stderr
    assert "dynamind flatten" in res.stderr and "dynamind reset --journal" in res.stderr
    assert app.leftovers() == []
    check = dynamind("check-config", "-c", str(app.config), "--journal")
    assert check.returncode == Exit.JOURNAL_CONFLICT and "BTC/USDT" in check.stdout

    # starting over: the journal (and the paper venue's book) move to an archive
    reset = dynamind("reset", "--journal", "-c", str(app.config), cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert not (app.dir / "journal.sqlite").exists()
    assert len(list((app.dir / "archive").glob("journal-*.sqlite"))) == 1
    assert dynamind("check-config", "-c", str(app.config), "--journal").returncode == 0
    app.start("--duration", "2")
    assert app.proc.wait(120) == 0, app.log_tail()

"""The journal's disk fills up under a running appliance, then is freed again.

Journal, paper venue state and metrics checkpoint live on a small tmpfs of the test's own.
Filling it must halt trading with the reason (log, `dynamind status`, STATUS=) and leave
every intent in its queue; freeing it must resume trading by itself, and the clean stop's
journal audit must find every published intent exactly once and positions equal to fills.
"""

from __future__ import annotations

import time

from tests.harness import (
    Appliance,
    NotifySocket,
    assert_hosts_agree,
    assert_intents_accounted,
    assert_positions_equal_fills,
    dynamind,
    queued_intents,
)


def halted(msg: dict) -> bool:
    return "trading halted: storage failing" in msg.get("STATUS", "")


def test_full_disk_halts_with_intents_queued_then_resumes(tmp_path, small_fs):
    app = Appliance(tmp_path)
    text = app.config.read_text()
    for name in ("journal.sqlite", "venue.sqlite"):
        text = text.replace(f"{tmp_path}/{name}", f"{small_fs.path}/{name}")
    app.config.write_text(text)
    app.journal_path = small_fs.path / "journal.sqlite"
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        app.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}).wait_ready()
        app.wait_for(lambda: app.counter("execution", "fills") > 20, what="trading")

        small_fs.fill()
        t_halt, msg = sock.wait_for(halted)
        assert "trading=halted" in msg["STATUS"] and "disk is full" in msg["STATUS"]
        taken = app.counter("execution", "intents")
        waiting = queued_intents(app)
        # three status lines later execution has still taken nothing; the intents wait
        for _ in range(3):
            t_halt, _ = sock.wait_for(halted, after=t_halt + 1e-6)
        assert app.counter("execution", "intents") == taken
        assert queued_intents(app) >= waiting > 0
        shown = dynamind("status", "-c", str(app.config)).stdout
        assert shown.startswith("trading: halted (storage failing: database or disk is full")
        app.wait_for_log("trading HALTED, storage failing: database or disk is full")
        assert app.workers()["execution"]["incarnation"] == 1  # halted, not crashed

        small_fs.free()
        t_free = time.monotonic()
        sock.wait_for(lambda m: "trading=active" in m.get("STATUS", ""), after=t_free)
        app.wait_for_log("storage writable again: trading resumes")
        app.wait_for(lambda: app.counter("execution", "intents") > taken + 100, what="resumed")
        assert app.workers()["execution"]["incarnation"] == 1
        assert app.stop() == 0
        assert_intents_accounted(app)  # every published intent exactly once
        assert_positions_equal_fills(app)
        assert_hosts_agree(app)
        assert app.leftovers() == []
    finally:
        app.kill_all()
        sock.close()

"""The journal's disk fills up under a running appliance, then is freed again.

Journal, paper venue state and metrics checkpoint live on a small tmpfs of the test's own.
Filling it must halt trading with the reason (log, `dynamind status`, STATUS=) and leave
every intent in its queue; freeing it must resume trading by itself, and the clean stop's
journal audit must find every published intent exactly once and positions equal to fills.
A stop while the disk is full cannot drain: it leaves the intent queues holding their
intents, and the next start journals them as stale.
"""

from __future__ import annotations

import re
import time

from appliance.model.records import INTENT
from appliance.runtime.exits import Exit
from appliance.shm import RecordQueue, remove_instance
from tests.harness import (
    Appliance,
    NotifySocket,
    assert_hosts_agree,
    assert_intents_accounted,
    assert_positions_equal_fills,
    audit_journal,
    dynamind,
    queued_intents,
)


def halted(msg: dict) -> bool:
    return "trading halted: storage failing" in msg.get("STATUS", "")


def on_small_fs(app: Appliance, small_fs, supervisor: str = "") -> Appliance:
    """``app`` with its journal and venue state on ``small_fs``; ``supervisor``: more keys
    for its [supervisor] table."""
    text = app.config.read_text()
    for name in ("journal.sqlite", "venue.sqlite"):
        text = text.replace(f"{app.dir}/{name}", f"{small_fs.path}/{name}")
    app.config.write_text(text.replace("[supervisor]\n", f"[supervisor]\n{supervisor}"))
    app.journal_path = small_fs.path / "journal.sqlite"
    return app


def test_full_disk_halts_with_intents_queued_then_resumes(tmp_path, small_fs):
    app = on_small_fs(Appliance(tmp_path), small_fs)
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
        # a reload while halted: the trading state it sets waits for the engine that resumes
        app.config.write_text(app.config.read_text() + '\n[trading]\nstate = "reduce_only"\n')
        assert dynamind("reload", "-c", str(app.config)).returncode == 0

        small_fs.free()
        t_free = time.monotonic()
        sock.wait_for(lambda m: "trading=reduce_only" in m.get("STATUS", ""), after=t_free)
        app.wait_for_log("storage writable again: trading resumes")
        app.wait_for(lambda: app.counter("execution", "intents") > taken + 100, what="resumed")
        assert app.workers()["execution"]["incarnation"] == 1
        assert app.stop() == 0
        with app.journal() as db:
            changes = db.execute("SELECT state, previous, who FROM trading_states").fetchall()
        assert ("reduce_only", "active", "config reload") in changes
        assert_intents_accounted(app)  # every published intent exactly once
        assert_positions_equal_fills(app)
        assert_hosts_agree(app)
        assert app.leftovers() == []
    finally:
        app.kill_all()
        sock.close()


def test_a_stop_on_a_full_disk_leaves_the_intents_to_the_next_start(tmp_path, small_fs):
    app = on_small_fs(Appliance(tmp_path), small_fs, "drain_timeout_s = 1.0\n")
    try:
        app.start().wait_ready()
        app.wait_for(lambda: app.counter("execution", "fills") > 20, what="trading")
        small_fs.fill()
        app.wait_for_log("trading HALTED, storage failing: database or disk is full")
        # A stop the instant the halt begins may find every agent waiting on an answered
        # intent and nothing queued yet (seen on a loaded machine): stop once some are.
        app.wait_for(lambda: queued_intents(app) > 0, what="intents queued behind the halt")
        assert app.stop() == Exit.UNDRAINED
        # the hosts did not wait for a positions check that could never settle
        app.wait_for_log("execution takes no intents (storage failing)")
        left, heads = _left_queues(app)
        assert sum(left.values()) > 0, "the halt left nothing queued: the test proves nothing"
        said = "published intents not drained (storage failing: database or disk is full) "
        held = ", ".join(f"/{app.instance}.intents.{h} holds {n}" for h, n in left.items())
        app.wait_for_log(f"{sum(left.values())} {said}left in shared memory: {held}")

        # starting over now would journal them into the next journal: refused, and why
        res = dynamind("reset", "--journal", "-c", str(app.config))
        assert res.returncode == Exit.USAGE and f"{app.instance}.intents.0" in res.stderr
        assert _left_queues(app) == (left, heads)  # nothing moved, nothing removed
        # a start while the disk is still full cannot journal them: it fails as a start
        # that may pass (systemd tries again), not as a journal a person must look at
        res = dynamind("run", "-c", str(app.config), "--duration", "1")
        assert res.returncode == Exit.START_FAILED, res.stderr
        assert "could not be journaled (storage failing: database or disk is full)" in res.stderr
        assert _left_queues(app) == (left, heads)

        small_fs.free()
        # the next stop drains: its drain may take what a loaded machine needs
        text = app.config.read_text()
        assert "drain_timeout_s = 1.0" in text
        app.config.write_text(text.replace("drain_timeout_s = 1.0", "drain_timeout_s = 60.0"))
        app.log_path = app.dir / "second.log"
        app.start().wait_ready()
        # Left now: journaled as stale; or, the few execution journaled before the venue's
        # file refused a write, journaled before (the audit below holds either way).
        found = re.search(
            rf"{sum(left.values())} intents left queued, (\d+) journaled as STALE_AFTER_CRASH, "
            r"(\d+) journaled before",
            app.log_path.read_text(),
        )
        assert found, app.log_tail()
        stale, before = int(found[1]), int(found[2])
        assert stale + before == sum(left.values())
        taken = app.counter("execution", "intents")
        app.wait_for(lambda: app.counter("execution", "intents") > taken + 100, what="trading")
        assert app.stop() == 0
        assert app.leftovers() == []
        with app.journal() as db:
            audit = audit_journal(db)  # every intent of both lifetimes exactly once
            first = db.execute("SELECT epoch FROM runs ORDER BY run_id LIMIT 1").fetchone()[0]
        assert audit.heads[first] == heads and len(audit.heads) == 2 and audit.clean_stops == 1
        assert audit.stale == stale
        assert_positions_equal_fills(app)
        assert_hosts_agree(app)
    finally:
        app.kill_all()
        remove_instance(app.instance)


def _left_queues(app: Appliance) -> tuple[dict[int, int], dict[int, int]]:
    """What an undrained stop left in /dev/shm, which must be the intent queues alone: per
    host, the intents each holds and its head."""
    assert app.leftovers() == [f"{app.instance}.intents.{h}" for h in (0, 1)]
    left, heads = {}, {}
    for h in (0, 1):
        q = RecordQueue.attach(app.instance, f"intents.{h}", INTENT, read_only=True)
        try:
            left[h], heads[h] = len(q), int(q.head)
        finally:
            q.close()
    return left, heads

"""Recovery guarantees of the running appliance: SIGKILL a worker, check what survived.

Each test runs a real `dynamind run` (supervisor, feed, two agent hosts, execution) on
real segments and a real SQLite journal, kills workers, stops it cleanly and then checks
what crossed process boundaries: queue positions against journal rows, positions
against fills, ring sequence numbers, and that no segment is left behind.
"""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest

from appliance.model.records import TICK
from appliance.shm import BroadcastRing
from tests.harness import (
    HEARTBEAT_TIMEOUT_S,
    Appliance,
    assert_hosts_agree,
    assert_intents_accounted,
    assert_positions_equal_fills,
    final_report,
    freeze_execution_with_intents_queued,
)


def intents_published(app: Appliance, name: str) -> int:
    return app.counter(name, "intents")


def test_clean_run_accounts_for_every_intent(app):
    app.start("--duration", "4")
    assert app.proc.wait(120) == 0, app.log_tail()
    heads = assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert sum(heads.values()) > 0, "no intent flowed"
    final = final_report(app)
    assert "DIFFERS" not in final["msg"]
    assert app.leftovers() == []


def test_sigkill_agent_host_loses_and_repeats_no_intent(app):
    app.start().wait_ready()
    app.wait_for(lambda: intents_published(app, "host-a") > 50, what="intents from host-a")
    app.kill("host-a")
    app.wait_restarted("host-a", 2)
    before = intents_published(app, "host-a")
    app.wait_for(lambda: intents_published(app, "host-a") > before + 20, what="intents resume")
    # the successor's warm-up replays the ring's history: state only, not counted as read
    assert app.counter("host-a", "ticks_in") <= app.counter("feed", "ticks_out")
    assert "state warmed from" in app.log_path.read_text()
    assert app.stop() == 0, app.log_tail()
    heads = assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert heads[0] > 0 and heads[1] > 0
    assert "DIFFERS" not in final_report(app)["msg"]


def test_sigkill_execution_reconciles_without_duplicates(app):
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "intents") > 100, what="execution busy")
    app.kill("execution")
    app.wait_restarted("execution", 2)
    done = app.counter("execution", "intents")
    app.wait_for(lambda: app.counter("execution", "intents") > done + 50, what="intents resume")
    assert app.stop() == 0, app.log_tail()
    assert_intents_accounted(app)
    assert_hosts_agree(app)
    # positions the restarted engine holds and reported to hosts == recomputed from fills
    assert_positions_equal_fills(app)
    with app.journal() as db:
        runs = db.execute("SELECT count(*) FROM runs").fetchone()[0]
        assert runs == 2, "the restarted execution process should begin a second run"


def test_sigkill_feed_ring_continues_without_garbage(app):
    app.start().wait_ready()
    ring = BroadcastRing.attach(app.instance, "ticks", TICK)
    reader = ring.reader("block", start="latest", slot=15)
    seen, last_seq, lost_reported = 0, None, 0
    killed = False
    try:
        deadline = time.monotonic() + 60
        while seen < 30_000 and time.monotonic() < deadline:
            if not killed and seen > 5_000:
                app.kill("feed")
                killed = True
            if not reader.wait(0.5):
                continue
            view = reader.read(1024)
            batch = view.copy()
            if not reader.valid():
                continue
            seq = batch["seq"].astype(np.int64)
            # in order, no repeats; any jump is exactly what the ring reported lost
            expected = np.arange(seq[0], seq[0] + len(seq))
            assert (seq == expected).all(), "ticks out of order within a batch"
            if last_seq is not None:
                jump = int(seq[0]) - last_seq - 1
                assert jump == reader.lost - lost_reported, "unreported gap in the stream"
            lost_reported = reader.lost
            last_seq = int(seq[-1])
            assert (batch["bid"] < batch["ask"]).all() and (batch["bid"] > 0).all()
            assert (batch["symbol"] < 2).all() and np.isin(batch["kind"], [1, 2]).all()
            seen += len(batch)
        assert killed and seen >= 30_000, f"only {seen} ticks seen"
        assert app.workers()["feed"]["incarnation"] >= 2
    finally:
        reader.close()
        ring.close()
    assert app.stop() == 0, app.log_tail()
    assert_intents_accounted(app)
    assert_hosts_agree(app)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [1])
def test_random_kills_then_clean_stop(app, seed):
    """Ten SIGKILLs of random workers, each once the one before came back (a count, not
    a pace: under load restarts are slow)."""
    rng = random.Random(seed)
    app.start().wait_ready()
    names = ["feed", "host-a", "host-b", "execution"]
    for _ in range(10):
        time.sleep(rng.uniform(0.2, 0.5))
        name = rng.choice(names)
        incarnation = app.workers()[name]["incarnation"]
        app.kill(name)
        app.wait_restarted(name, incarnation + 1)
    assert app.stop() == 0, app.log_tail()
    heads = assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert sum(heads.values()) > 0
    assert "DIFFERS" not in final_report(app)["msg"]


def test_execution_down_at_the_stop_is_started_for_the_hosts_checks(app):
    """A stop right behind a crash of execution: the hosts' positions checks still settle
    (execution is started for them, not only later for the drain)."""
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "intents") > 50, what="execution busy")
    app.kill("execution")
    assert app.stop() == 0, app.log_tail()
    assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert "DIFFERS" not in final_report(app)["msg"]


def test_recorded_ticks_replay_through_the_appliance(tmp_path):
    """The recorder writes what the feed published as Parquet history; a replay run plays
    exactly that back."""
    from appliance.feeds.parquet import ParquetDataset

    rec_dir, play_dir = tmp_path / "rec", tmp_path / "play"
    rec_dir.mkdir()
    play_dir.mkdir()
    ticks = tmp_path / "history"
    rec = Appliance(rec_dir, extra=f'[recorder]\nenabled = true\npath = "{ticks}"\n')
    try:
        rec.start("--duration", "2")  # fewer ticks than the ring holds: the fast replay never laps
        assert rec.proc.wait(120) == 0, rec.log_tail()
        history = ParquetDataset(ticks)
        recorded = np.concatenate(list(history.chunks()))
        n = len(recorded)
        assert n > 1000 and history.gaps == []
        seq = recorded["seq"].astype(np.int64)
        assert (np.diff(seq) == 1).all(), "the recorder skipped or repeated ticks"
    finally:
        rec.kill_all()
    play = Appliance(play_dir, feed_kind="replay", feed_extra=f'path = "{ticks}"\npace = "fast"')
    try:
        play.start().wait_ready()
        play.wait_for(lambda: play.counter("feed", "ticks_out") >= n, what="replay done")
        play.wait_for(lambda: play.counter("host-a", "ticks_in") >= n, what="host-a read all")
        assert play.counter("feed", "ticks_out") == n
        assert play.stop() == 0, play.log_tail()
        assert_intents_accounted(play)
    finally:
        play.kill_all()
    assert rec.leftovers() == [] and play.leftovers() == []


def test_execution_dying_during_the_drain_is_restarted_to_finish_it(app):
    # the frozen execution is not killed for its heartbeat while intents pile up: this
    # test kills it itself, during the drain
    default = f"heartbeat_timeout_s = {HEARTBEAT_TIMEOUT_S}"
    text = app.config.read_text()
    assert default in text
    app.config.write_text(text.replace(default, "heartbeat_timeout_s = 120"))
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "intents") > 50, what="execution busy")
    pid = freeze_execution_with_intents_queued(app)
    app.proc.send_signal(signal.SIGTERM)  # stop: intake, then drain...
    app.wait_for_log("feed stopped")
    os.kill(pid, signal.SIGKILL)  # ...and execution dies before draining anything
    assert app.stop() == 0, app.log_tail()
    assert "while draining" in app.log_path.read_text()
    assert_intents_accounted(app)  # hosts stopped while execution was frozen: no check

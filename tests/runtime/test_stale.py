"""Intents a crashed appliance left queued are journaled as stale at the next start.

A real appliance runs with its execution process frozen (SIGSTOP), so intents pile up in
the queues; then its supervisor is SIGKILLed. The next start on the same journal must
journal every intent still queued as REJECTED (STALE_AFTER_CRASH) before it reclaims the
segments, and the journal audit then finds every published intent of both lifetimes
exactly once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import psutil
import pytest

from appliance.config import ClusterConfig
from appliance.model.orders import OrderState
from appliance.model.records import INTENT, RejectReason
from appliance.runtime.segments import SegmentSet
from appliance.runtime.stale import StaleNotJournaled
from appliance.shm import RecordQueue, remove_instance
from tests.harness import (
    Appliance,
    assert_hosts_agree,
    audit_journal,
    freeze_execution_with_intents_queued,
    queued_intents,
)


def crash_with_intents_queued(app: Appliance, orphan_signal: int) -> None:
    """Freeze execution until intents pile up, SIGKILL the supervisor, then treat the
    frozen orphan as the service manager would (``orphan_signal``: SIGCONT lets it see the
    parent-death SIGTERM and finish, SIGKILL ends it)."""
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "intents") > 50, what="execution busy")
    execution = freeze_execution_with_intents_queued(app)
    workers = app.crash()
    os.kill(execution, orphan_signal)
    if orphan_signal != signal.SIGKILL:
        os.kill(execution, signal.SIGCONT)
    procs = [psutil.Process(p) for p in workers if psutil.pid_exists(p)]
    _, alive = psutil.wait_procs(procs, 60)
    assert alive == [], f"orphans: {alive}"


@pytest.mark.parametrize("orphan_signal", [signal.SIGKILL, signal.SIGCONT], ids=["kill", "cont"])
def test_intents_queued_at_a_crash_are_journaled_as_stale_at_the_next_start(
    tmp_path, orphan_signal
):
    # A frozen execution is not killed for its heartbeat while the intents pile up.
    app = Appliance(tmp_path, heartbeat_timeout_s=120.0)
    try:
        _crash_and_restart(app, orphan_signal)
    finally:
        app.kill_all()
        remove_instance(app.instance)


def _crash_and_restart(app: Appliance, orphan_signal: int) -> None:
    crash_with_intents_queued(app, orphan_signal)
    left = queued_intents(app)
    if orphan_signal == signal.SIGKILL:  # a killed orphan takes nothing more
        assert left > 0, "the crash left nothing queued: the test proves nothing"
    first_log = app.log_path.read_text()
    # each orphan says so once, and does not wait for a check nobody will read
    assert first_log.count("is gone; stopping") <= 4, first_log[-3000:]
    app.log_path = app.dir / "second.log"
    app.start("--duration", "3")
    assert app.proc.wait(120) == 0, app.log_tail()
    log = app.log_path.read_text()
    assert app.leftovers() == []
    with app.journal() as db:
        audit = audit_journal(db)  # every intent of both epochs exactly once
        assert len(audit.heads) == 2 and audit.clean_stops == 1
        stale = db.execute(
            "SELECT count(*), count(DISTINCT epoch) FROM orders WHERE reason_text LIKE "
            "'STALE_AFTER_CRASH%'"
        ).fetchone()
    # Everything left queued was journaled now, unless execution journaled it first: it
    # may have been frozen between journaling a run and releasing it from the queue (and
    # agents waiting for those reports send nothing new), and a SIGCONTed orphan may
    # finish the run it held before it sees the SIGTERM. The audit above holds either way;
    # test_a_journal_that_cannot_take_them_keeps_them_queued shows the stale path exactly.
    assert audit.stale == stale[0] <= left and stale[1] == (1 if stale[0] else 0)
    if left:
        said = f"{left} intents left queued, {stale[0]} journaled as STALE_AFTER_CRASH, "
        assert f"{said}{left - stale[0]} journaled before" in log, log[-3000:]
    assert_hosts_agree(app)
    assert "Traceback" not in first_log + log


DEAD_SUPERVISOR = """
import json, sys, time
import numpy as np
from appliance.config import load_config
from appliance.model.records import INTENT
from appliance.runtime.segments import SegmentSet
segs = SegmentSet(load_config(sys.argv[1]))
segs.create()
for h, (iq, _) in enumerate(segs.queues):
    p = iq.producer(seq_field="seq")
    rec = np.zeros(int(sys.argv[2]), INTENT)
    rec["host"], rec["qty"], rec["side"], rec["order_type"] = h, 0.01, 1, 1
    p.push(rec)
print(json.dumps(segs.stats.segment.header["created_ns"].item()), flush=True)
time.sleep(600)
"""


def test_a_journal_that_cannot_take_them_keeps_them_queued(config, tmp_path):
    """The journal cannot be written: the start fails saying so and reclaims nothing; the
    next start with a usable journal journals them under the dead run's epoch."""
    child = subprocess.Popen(
        [sys.executable, "-c", DEAD_SUPERVISOR, str(tmp_path / "dynamind.toml"), "7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        epoch = child.stdout.readline().strip()
    finally:
        child.kill()
        child.wait(30)
    unusable = config.model_copy(update={"journal_path": str(tmp_path)})  # a directory
    segs = SegmentSet(unusable)
    with pytest.raises(StaleNotJournaled, match="14 intents the last run left queued"):
        segs.create()
    segs.destroy()
    q = RecordQueue.attach(config.instance, "intents.1", INTENT, read_only=True)
    assert len(q) == 7, "the queues must survive a start that could not journal them"
    q.close()
    segs = SegmentSet(config)
    try:
        segs.create()
        assert len(segs.queues[0][0]) == 0, "reclaimed and created again"
    finally:
        segs.destroy()
    with sqlite3.connect(config.journal_path) as db:
        rows = db.execute("SELECT epoch, host, intent_seq, state, reason FROM orders").fetchall()
        drained = db.execute("SELECT epoch, drained, stopped_ns FROM runs").fetchall()
    assert sorted(rows) == [
        (epoch, h, s, OrderState.REJECTED, RejectReason.STALE_AFTER_CRASH)
        for h in (0, 1)
        for s in range(7)
    ]
    assert drained == [(epoch, '{"0": 7, "1": 7}', None)]


def test_an_agents_instance_keeps_no_journal_of_them(config, tmp_path):
    """A cluster's agents instance has no journal: what its crashed run left queued never
    reached execution, so the start drops it (saying so) and writes no journal file."""
    child = subprocess.Popen(
        [sys.executable, "-c", DEAD_SUPERVISOR, str(tmp_path / "dynamind.toml"), "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        child.stdout.readline()
    finally:
        child.kill()
        child.wait(30)
    role = ClusterConfig(servers=["nats://127.0.0.1:4222"], role="agents", hosts=["host-a"])
    agents = config.model_copy(update={"cluster": role})
    segs = SegmentSet(agents)
    try:
        segs.create()
        assert [len(iq) for iq, _ in segs.queues] == [0]
    finally:
        segs.destroy()
    assert not os.path.exists(config.journal_path)

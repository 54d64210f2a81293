"""`dynamind trading`: the operator halts, restricts and resumes a running appliance."""

from __future__ import annotations

import getpass
import sqlite3

from appliance.model.records import RejectReason
from appliance.runtime.exits import Exit
from tests.harness import assert_intents_accounted, dynamind, write_config


def resting_quotes(app) -> int:
    with sqlite3.connect(f"file:{app.dir}/venue.sqlite?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM orders WHERE state IN (3, 4)").fetchone()[0]


def rejected(app, reason: RejectReason) -> int:
    with app.journal() as db:
        return db.execute("SELECT count(*) FROM orders WHERE reason = ?", (reason,)).fetchone()[0]


def test_operator_changes_the_trading_state_with_who_and_why(mm_app):
    app = mm_app
    cfg = str(app.config)
    user = getpass.getuser()
    app.start().wait_ready()
    app.wait_for(lambda: resting_quotes(app) > 0, what="quotes resting")

    res = dynamind("trading", "halt", "--reason", "checking the feed", "-c", cfg)
    assert res.returncode == Exit.OK, res.stdout + res.stderr
    assert res.stdout.startswith("trading halted (was active)")
    assert f"by {user}" in res.stdout and "checking the feed" in res.stdout
    status = dynamind("status", "-c", cfg).stdout
    assert status.startswith(f"trading: halted (dynamind trading by {user} at "), status
    assert "checking the feed" in status.splitlines()[0]
    assert resting_quotes(app) == 0  # halting took every quote off the venue
    app.wait_for(lambda: rejected(app, RejectReason.HALTED) > 0, what="quotes refused")

    res = dynamind("trading", "reduce-only", "-c", cfg)
    assert res.returncode == Exit.OK and "reduce_only (was halted)" in res.stdout
    res = dynamind("trading", "resume", "--reason", "all clear", "-c", cfg)
    assert res.returncode == Exit.OK and "active (was reduce_only)" in res.stdout
    assert dynamind("status", "-c", cfg).stdout.startswith("trading: active")
    app.wait_for(lambda: resting_quotes(app) > 0, what="quoting again")

    assert app.stop() == 0, app.log_tail()
    assert_intents_accounted(app)
    with app.journal() as db:
        changes = db.execute("SELECT state, previous, who, why FROM trading_states").fetchall()
    assert [(s, p) for s, p, _, _ in changes] == [
        ("active", "active"), ("halted", "active"), ("reduce_only", "halted"),
        ("active", "reduce_only"),
    ]  # fmt: skip
    assert changes[0][2] == "config"
    for _, _, who, _ in changes[1:]:
        assert who.startswith(f"operator {user} (uid ")
    assert changes[1][3].endswith(": checking the feed") and changes[3][3].endswith(": all clear")


def test_trading_needs_a_running_appliance(tmp_path):
    path, _ = write_config(tmp_path)
    res = dynamind("trading", "halt", "-c", str(path))
    assert res.returncode == Exit.NOT_RUNNING and "no execution process" in res.stderr

"""`dynamind trading`: the operator halts, restricts and resumes a running appliance."""

from __future__ import annotations

import getpass
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from appliance.model.records import RejectReason
from appliance.runtime.exits import Exit
from tests.harness import Appliance, assert_intents_accounted, dynamind, write_config
from tests.runtime.fake_desk import FakeDesk
from tests.shm.users import NOBODY, require_root


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


def test_a_squatter_on_the_old_abstract_name_answers_nobody(app):
    """Issue 18: another user bound the abstract name the desk used to have before the
    start and answered `{"ok": true}` for execution. The desk is a file in a directory of
    the appliance's now: the start goes on, the operator reaches execution, and an
    execution process killed while listening binds again at once."""
    require_root()
    fake = FakeDesk(NOBODY, NOBODY, abstract=f"\0dynamind/{app.instance}/trading")
    try:
        cfg = str(app.config)
        app.start().wait_ready()
        res = dynamind("trading", "halt", "--reason", "squatted?", "-c", cfg)
        assert res.returncode == Exit.OK, res.stdout + res.stderr
        assert res.stdout.startswith("trading halted (was active): ") and "by root" in res.stdout
        assert "fake" not in res.stdout + res.stderr

        app.kill("execution")  # its socket file stays behind
        app.wait_restarted("execution", 2)
        res = dynamind("trading", "resume", "-c", cfg)
        assert res.returncode == Exit.OK and "active (was halted)" in res.stdout, res.stderr
        assert app.stop() == 0, app.log_tail()
    finally:
        heard = fake.stop()
    assert heard == []
    log = app.log_path.read_text()
    assert "Address already in use" not in log and "Traceback" not in log
    assert "trading desk closed" not in log


def test_a_desk_another_user_made_first_stops_the_start_and_is_never_believed(tmp_path):
    """A squatter who may write where the journal lives (a shared directory like /tmp)
    makes the desk's directory before the start and answers `{"ok": true}` in it: the
    appliance refuses to start (exit 16, naming the directory and its owner; nothing
    started, nothing removed), and `dynamind trading halt` sends it nothing and fails."""
    require_root()
    base = Path(tempfile.mkdtemp(prefix="dynamind-desk-", dir="/tmp"))  # others may enter
    try:
        base.chmod(0o755)
        shared = base / "shared"
        shared.mkdir()
        shared.chmod(0o1777)
        app = Appliance(shared)
        desk = shared / "journal.desk"
        fake = FakeDesk(NOBODY, NOBODY, desk)
        try:
            run = dynamind("run", "-c", str(app.config), "--duration", "30", cwd=shared)
            assert run.returncode == Exit.SHM_NAME_TAKEN, run.stdout + run.stderr
            [said] = [line for line in run.stderr.splitlines() if line.startswith("nothing")]
            assert said.startswith(f"nothing started: trading desk {desk} exists and belongs "
                                   "to uid 65534 (nobody)"), said  # fmt: skip
            assert "Traceback" not in run.stderr and app.leftovers() == []
            check = dynamind("check-config", "-c", str(app.config))  # says so too
            assert check.returncode == Exit.SHM_NAME_TAKEN and said[17:] in check.stderr

            for args in (("trading", "halt"), ("trading", "resume")):
                res = dynamind(*args, "-c", str(app.config))
                assert res.returncode == Exit.SHM_NAME_TAKEN, res.stdout + res.stderr
                assert res.stdout == "" and "fake" not in res.stderr
                assert res.stderr.startswith(f"not asking: trading desk {desk}:"), res.stderr
        finally:
            heard = fake.stop()
        assert heard == [] and os.stat(desk).st_uid == NOBODY  # left to its owner
    finally:
        shutil.rmtree(base)


def test_a_restarted_execution_beside_a_foreign_desk_trades_on_and_opens_it_later(app):
    """The desk's directory replaced by another user's while the appliance runs, then
    execution restarted: it says why its desk is closed (no traceback, no crash loop),
    trades on, the operator's command refuses that desk, and once it is gone execution
    opens its own again."""
    require_root()
    cfg = str(app.config)
    app.start().wait_ready()
    desk = app.dir / "journal.desk"
    shutil.rmtree(desk)
    desk.mkdir(mode=0o700)
    os.chown(desk, NOBODY, NOBODY)
    app.kill("execution")
    app.wait_restarted("execution", 2)
    app.wait_for_log("trading desk closed: trading desk")
    res = dynamind("trading", "halt", "-c", cfg)
    assert res.returncode == Exit.SHM_NAME_TAKEN and res.stderr.startswith("not asking: ")
    shutil.rmtree(desk)
    app.wait_for_log("trading desk open at")
    res = dynamind("trading", "halt", "-c", cfg)
    assert res.returncode == Exit.OK and "halted (was active)" in res.stdout, res.stderr
    assert app.stop() == 0, app.log_tail()
    assert "Traceback" not in app.log_path.read_text()

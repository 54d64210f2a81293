"""Flattening a running appliance, and archiving its journal between runs."""

from __future__ import annotations

import os
import pwd
import sqlite3
from contextlib import closing
from pathlib import Path

from appliance.runtime.exits import Exit
from appliance.trading.flatten import FLATTEN_SEQ
from tests.harness import (
    assert_hosts_agree,
    assert_intents_accounted,
    dynamind,
    final_report,
    journal_positions,
)


def test_flatten_closes_every_position_through_execution(app):
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "fills") > 200, what="positions")
    # the journal is the running appliance's: the offline tools leave it alone
    res = dynamind("journal", "archive", "--before", "1d", "-c", str(app.config))
    assert res.returncode == Exit.ALREADY_RUNNING and "stop it first" in res.stderr
    assert dynamind("reset", "--journal", "-c", str(app.config)).returncode == Exit.ALREADY_RUNNING
    res = dynamind("flatten", "-c", str(app.config), "--timeout", "120")
    assert res.returncode == Exit.OK, res.stdout + res.stderr
    assert "flat: every position is closed" in res.stdout
    assert "reduce_only (dynamind flatten at" in res.stdout
    status = dynamind("status", "-c", str(app.config)).stdout
    assert status.startswith("trading: reduce_only (dynamind flatten at")
    assert app.stop() == 0
    assert final_report(app)["positions"] == []
    assert journal_positions(app) == {}
    assert_intents_accounted(app)  # the agents' own intents, each journaled once
    assert_hosts_agree(app)  # the hosts took their agents' flat positions from execution
    with app.journal() as db:
        closing = db.execute(
            "SELECT count(*), sum(state = 5) FROM orders WHERE intent_seq >= ?", (FLATTEN_SEQ,)
        ).fetchone()
        who = db.execute("SELECT who FROM trading_states WHERE state = 'reduce_only'").fetchall()
    assert closing[0] > 0 and closing[1] > 0  # journaled, and filled
    user = pwd.getpwuid(os.getuid()).pw_name  # as the kernel named the operator
    assert who and all(w.startswith(f"operator {user} (uid {os.getuid()}, pid ") for (w,) in who)


def test_flatten_needs_a_running_appliance(tmp_path):
    from tests.harness import write_config

    path, _ = write_config(tmp_path)
    assert dynamind("flatten", "-c", str(path)).returncode == Exit.NOT_RUNNING


def test_archived_journal_starts_with_the_same_positions(app, tmp_path):
    app.start("--duration", "3")
    assert app.proc.wait(120) == 0, app.log_tail()
    before = journal_positions(app)
    assert before
    res = dynamind("journal", "archive", "--before", "0m", "-c", str(app.config), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "archived runs 1..1" in res.stdout and "open positions carried over" in res.stdout
    assert journal_positions(app) == before
    app.start("--duration", "3")
    assert app.proc.wait(120) == 0, app.log_tail()
    msg = final_report(app)["msg"]
    assert "journal agrees, reported to hosts agrees" in msg, msg


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def test_archive_reset_run_archive_keeps_each_journal_apart(app, tmp_path):
    """The README's ExecStartPre archive on every start, with a reset the same day: each
    journal's runs go to an archive file of their own, the reset takes the journal's side
    files along, and an archive with nothing to move writes nothing."""
    cfg, archive = str(app.config), tmp_path / "archive"
    app.start("--duration", "2")
    assert app.proc.wait(120) == 0, app.log_tail()
    res = dynamind("journal", "archive", "--before", "30d", "-c", cfg)
    assert res.returncode == 0 and "nothing to archive" in res.stdout, res.stderr
    assert not archive.exists()  # nothing to archive: no file, no folder
    res = dynamind("journal", "archive", "--before", "0m", "-c", cfg)
    assert res.returncode == 0 and "archived runs 1..1" in res.stdout, res.stderr
    (first,) = _files(archive)
    side = {f"journal.sqlite{s}" for s in ("-wal", "-shm", ".metrics.npz")} & _files(tmp_path)
    assert "journal.sqlite.metrics.npz" in side

    res = dynamind("reset", "--journal", "-c", cfg)
    assert res.returncode == 0, res.stderr
    assert not {"journal.sqlite", "venue.sqlite", *side} & _files(tmp_path)
    reset = _files(archive) - {first}
    stamped = next(n for n in reset if n.startswith("journal-") and n.endswith(".sqlite"))
    assert {f"{stamped}{n.removeprefix('journal.sqlite')}" for n in side} <= reset

    app.start("--duration", "2")
    assert app.proc.wait(120) == 0, app.log_tail()
    res = dynamind("journal", "archive", "--before", "0m", "-c", cfg)
    assert res.returncode == 0 and "archived runs 1..1" in res.stdout, res.stdout + res.stderr
    (second,) = _files(archive) - reset - {first}
    assert second == first.replace(".sqlite", "-2.sqlite")
    started = {}
    for name in (first, stamped, second):
        with closing(sqlite3.connect(archive / name)) as db:
            started[name] = db.execute("SELECT started_ns FROM runs WHERE run_id = 1").fetchone()
    assert started[first] == started[stamped] != started[second]
    res = dynamind("journal", "archive", "--before", "0m", "-c", cfg)  # again: same file
    assert res.returncode == 0 and f"to {archive / second}: 0 orders" in res.stdout, res.stdout
    assert _files(archive) == reset | {first, second}


def test_reset_moves_a_journal_sqlite_cannot_read_with_its_wal(tmp_path, garbage_journal):
    from tests.harness import write_config

    path, _ = write_config(tmp_path)
    garbage_journal.rename(tmp_path / "journal.sqlite")
    (tmp_path / "journal.sqlite-wal").write_bytes(b"wal")
    res = dynamind("reset", "--journal", "-c", str(path))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert not {"journal.sqlite", "journal.sqlite-wal"} & _files(tmp_path)
    (wal,) = [n for n in _files(tmp_path / "archive") if n.endswith(".sqlite-wal")]
    assert (tmp_path / "archive" / wal).read_bytes() == b"wal"

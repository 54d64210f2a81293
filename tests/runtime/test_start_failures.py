"""`dynamind run` when the appliance cannot start: one line naming what failed and why, an
exit code that says so (no traceback, no 1), the failed worker not started again, and
everything that did start stopped with its segments removed."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from appliance.runtime.exits import Exit
from tests.harness import Appliance
from tests.shm.users import NOBODY, require_root


def _run_to_end(app: Appliance, timeout: float = 180) -> tuple[int, list[str]]:
    """Start the appliance and wait for it to end by itself: its code and log lines."""
    app.start()
    try:
        app.proc.wait(timeout)
    finally:
        if app.kill_all():
            pytest.fail("the appliance did not end by itself:\n" + app.log_tail())
    code = app.stop()
    return code, app.log_path.read_text().splitlines()


def _said(lines: list[str]) -> str:
    """The command's own last word (the log lines before it are JSON)."""
    assert not any(line.startswith("Traceback") for line in lines), "\n".join(lines[-30:])
    return lines[-1]


def _started(lines: list[str], worker: str) -> int:
    return sum(f"started {worker} pid=" in line for line in lines)


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_execution_failing_before_ready_fails_the_start_once(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    (tmp_path / "venue.sqlite").write_bytes(b"not a database " * 100)  # the paper venue's
    code, lines = _run_to_end(app)
    last = _said(lines)
    assert code == Exit.START_FAILED, "\n".join(lines[-20:])
    assert last.startswith("start failed: execution exited with code 1 before it was ready: ")
    assert "venue.sqlite" in last, last
    assert _started(lines, "execution") == 1  # not started again at the stop
    assert not any("could not be drained" in line for line in lines)
    assert app.leftovers() == []


def test_a_feed_that_cannot_reach_its_exchange_fails_the_start(tmp_path: Path) -> None:
    port = _closed_port()
    feed = (
        f'[feed.ccxt]\nexchange = "binanceus"\n[feed.ccxt.urls.api]\n'
        f'public = "http://127.0.0.1:{port}/api/v3"\nws = {{ spot = "ws://127.0.0.1:{port}/ws" }}'
    )
    app = Appliance(tmp_path, feed_kind="ccxt", feed_extra=feed)
    code, lines = _run_to_end(app)
    last = _said(lines)
    assert code == Exit.START_FAILED, "\n".join(lines[-20:])
    assert last.startswith("start failed: feed exited with code 1 before it was ready: "), last
    assert f"127.0.0.1:{port}" in last
    assert _started(lines, "feed") == 1
    assert any("execution stopped (exit code 0)" in line for line in lines)  # it drained
    assert app.leftovers() == []


def test_an_unusable_journal_is_refused_before_anything_starts(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    app.journal_path.write_bytes(os.urandom(20000))
    code, lines = _run_to_end(app)
    last = _said(lines)
    assert code == Exit.JOURNAL_CONFLICT
    assert last.startswith("nothing started: ") and "not a usable dynamind journal" in last
    assert _started(lines, "execution") == 0
    assert app.leftovers() == []


def _directory(path: Path) -> None:
    path.mkdir()


def _junk(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _strangers(path: Path) -> None:
    require_root()
    path.write_bytes(bytes(8192))
    os.chown(path, NOBODY, NOBODY)


@pytest.mark.parametrize(
    ("name", "put", "why"),
    [
        ("{}.board", _directory, "is a directory"),
        ("{}.ticks", _junk, "is not a dynamind segment"),
        ("{}.ticks", _strangers, f"belongs to uid {NOBODY}"),
        ("{}.stats", _junk, "is not a dynamind segment"),
        ("sem.{}.ticks.r0", _strangers, f"belongs to uid {NOBODY}"),
    ],
)
def test_a_squatted_segment_name_is_refused_and_left_alone(
    tmp_path: Path, name: str, put, why: str
) -> None:
    app = Appliance(tmp_path)
    path = Path("/dev/shm") / name.format(app.instance)
    try:
        put(path)
        code, lines = _run_to_end(app)
        last = _said(lines)
        assert code == Exit.SHM_NAME_TAKEN, "\n".join(lines[-20:])
        assert last.startswith("nothing started: ") and why in last and str(path) in last, last
        assert app.leftovers() == [path.name]  # ours removed, the squatter's kept
    finally:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def test_a_journal_that_cannot_be_created_starts_nothing(tmp_path: Path) -> None:
    app = Appliance(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    text = app.config.read_text()
    app.config.write_text(text.replace(f'"{tmp_path}/journal.sqlite"', '"afile/journal.sqlite"'))
    code, lines = _run_to_end(app)
    assert code == Exit.CONFIG, "\n".join(lines[-20:])
    assert (
        _said(lines)
        == "nothing started: journal_path: afile/journal.sqlite: afile is a file, not a directory"
    )
    assert _started(lines, "execution") == 0
    assert app.leftovers() == []

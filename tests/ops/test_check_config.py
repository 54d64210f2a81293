"""`dynamind check-config` refuses what `dynamind run` would refuse, with the same words
and exit code: unknown exchanges, journal files that cannot be written, too little /dev/shm,
and (with --journal) a journal that is damaged or no journal at all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.config import load_config
from appliance.runtime.exits import Exit
from appliance.shm import list_names
from appliance.storage.sqlite import StoreError
from appliance.workers.compose import execution_engine
from tests.harness import dynamind, write_config

ROOT = Path(__file__).resolve().parents[2]


def _edited(src: Path, dst: Path, **edits: str) -> Path:
    text = src.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    dst.write_text(text)
    return dst


def test_unknown_exchange_is_refused_where_it_is_named(tmp_path):
    path = _edited(
        ROOT / "config" / "examples" / "live-sim.toml",
        tmp_path / "c.toml",
        **{'exchange = "binanceus"': 'exchange = "nosuchexchange"'},
    )
    res = dynamind("check-config", "-c", str(path))
    assert res.returncode == Exit.CONFIG, res.stdout + res.stderr
    assert "feed.ccxt.exchange: 'nosuchexchange' is not a ccxt.pro (websocket) exchange id" in (
        res.stderr
    )
    assert "execution.ccxt.exchange: 'nosuchexchange' is not a ccxt exchange id" in res.stderr
    run = dynamind("run", "-c", str(path), "--duration", "1", cwd=tmp_path)
    assert run.returncode == Exit.CONFIG and "nothing started" in run.stderr
    assert "'nosuchexchange' is not a ccxt exchange id" in run.stderr


@pytest.mark.parametrize(
    ("journal", "why"),
    [
        ("{dir}/afile/journal.sqlite", "{dir}/afile is a file, not a directory"),
        ("{dir}/afile/sub/journal.sqlite", "{dir}/afile is a file, not a directory"),
        ("/sys/dynamind/journal.sqlite", "cannot create files in /sys"),
    ],
)
def test_journal_path_that_cannot_be_written_is_refused(tmp_path, journal, why):
    (tmp_path / "afile").write_text("")
    path, _ = write_config(tmp_path)
    journal, why = journal.format(dir=tmp_path), why.format(dir=tmp_path)
    _edited(
        path, path, **{f'journal_path = "{tmp_path}/journal.sqlite"': f'journal_path = "{journal}"'}
    )
    res = dynamind("check-config", "-c", str(path))
    assert res.returncode == Exit.CONFIG, res.stdout + res.stderr
    assert f"{path}: error: journal_path: {journal}: {why}" in res.stderr
    assert "but `dynamind run` refuses it here" in res.stderr and ": ok" not in res.stdout
    # the same check, in the same words, is what the execution process refuses at a start
    with pytest.raises(StoreError, match=re.escape(f"journal_path: {journal}: {why}")):
        execution_engine(load_config(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dynamind.toml"]


def test_too_little_shared_memory_exits_as_run_does(tmp_path):
    path, _ = write_config(tmp_path)
    _edited(path, path, **{"ring_capacity = 16384": "ring_capacity = 1099511627776"})
    res = dynamind("check-config", "-c", str(path))
    run = dynamind("run", "-c", str(path), "--duration", "1", cwd=tmp_path)
    assert res.returncode == run.returncode == Exit.NO_SHM_SPACE, res.stderr + run.stderr
    message = run.stderr.split("nothing started: ", 1)[1].strip()
    assert f"{path}: error: {message}" in res.stderr


def test_a_usable_config_is_ok(tmp_path):
    path, _ = write_config(tmp_path)
    res = dynamind("check-config", "-c", str(path), "--journal")
    assert res.returncode == Exit.OK, res.stderr
    assert res.stdout.startswith(f"{path}: ok (") and "consistent with the config" in res.stdout
    assert list(tmp_path.iterdir()) == [path]  # checking created nothing


UNUSABLE_JOURNALS = pytest.mark.parametrize(
    ("fixture", "why"),
    [("garbage_journal", "not a usable dynamind journal"), ("damaged_journal", "damaged journal")],
)


@UNUSABLE_JOURNALS
def test_unusable_journal_is_named_without_a_traceback(tmp_path, request, fixture, why):
    journal = request.getfixturevalue(fixture)
    path, _ = write_config(tmp_path)
    res = dynamind("check-config", "-c", str(path), "--journal", str(journal))
    assert res.returncode == Exit.JOURNAL_UNUSABLE, res.stdout + res.stderr
    assert res.stderr.startswith(f"{journal}: {why}") and "Traceback" not in res.stderr
    assert "consistent" not in res.stdout


@UNUSABLE_JOURNALS
def test_run_on_an_unusable_journal_starts_nothing(tmp_path, request, fixture, why):
    request.getfixturevalue(fixture).rename(tmp_path / "journal.sqlite")
    path, instance = write_config(tmp_path)
    res = dynamind("run", "-c", str(path), "--duration", "1", cwd=tmp_path)
    assert res.returncode == Exit.JOURNAL_UNUSABLE, res.stdout + res.stderr
    assert "nothing started" in res.stderr and why in res.stderr
    assert "Traceback" not in res.stderr
    assert list_names(instance) == []

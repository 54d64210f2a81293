"""What the storage helpers say of a path before anything is written to it."""

from __future__ import annotations

import errno
import tempfile

import pytest

from appliance.storage.sqlite import unwritable


def test_a_path_under_a_file_or_a_directory_in_its_place_is_unwritable(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    assert unwritable(tmp_path / "afile" / "journal.sqlite").endswith("is a file, not a directory")
    (tmp_path / "journal.sqlite").mkdir()
    assert unwritable(tmp_path / "journal.sqlite").endswith("is a directory")
    assert unwritable(tmp_path / "new" / "journal.sqlite") is None  # made at open
    assert not (tmp_path / "new").exists()  # and nothing made by asking


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_full_or_failing_filesystem_is_left_to_the_storage_halt(tmp_path, monkeypatch, code):
    """A full disk may pass: execution starts halted and resumes when there is room
    (trading/storage_halt.py), where a path it may not write never works."""

    def full(**_kw):
        raise OSError(code, "no room")

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    assert unwritable(tmp_path / "journal.sqlite") is None


def test_a_forbidden_directory_is_unwritable(tmp_path, monkeypatch):
    def forbidden(**_kw):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", forbidden)
    assert "cannot create files in" in unwritable(tmp_path / "journal.sqlite")

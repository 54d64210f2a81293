"""A segment's name taken by something that is not ours: refused by name, never removed.

Another user's file, a directory, or a file of this user that is no dynamind segment
(no magic) is left exactly as found; only what a dead creator of ours left is reclaimed.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.shm import BroadcastRing, SegmentTaken, list_names
from appliance.shm.header import HEADER, HEADER_SIZE, MAGIC
from appliance.shm.segment import reclaim_stale
from tests.shm.procs import REC
from tests.shm.users import NOBODY, require_root


@pytest.fixture
def squat(instance: str) -> Iterator[Path]:
    """The path of the instance's ticks segment, for the test to put something at;
    removed after the test, whatever it is."""
    path = Path(f"/dev/shm/{instance}.ticks")
    yield path
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _refused(instance: str, path: Path, why: str) -> None:
    with pytest.raises(SegmentTaken, match=why) as err:
        BroadcastRing.create(instance, "ticks", REC, 64)
    assert str(path) in str(err.value)
    assert list_names(instance) == [path.name]  # nothing else made, nothing removed


def test_a_file_that_is_no_segment_is_refused_and_kept(instance: str, squat: Path) -> None:
    data = os.urandom(3 * HEADER_SIZE)
    squat.write_bytes(data)
    _refused(instance, squat, "not a dynamind segment")
    assert reclaim_stale(instance) == []  # not taken for a dead owner's either
    assert squat.read_bytes() == data


def test_a_short_file_is_refused_and_kept(instance: str, squat: Path) -> None:
    squat.write_bytes(b"hello")
    _refused(instance, squat, "smaller than a segment header")
    assert squat.read_bytes() == b"hello"


def test_a_directory_is_refused_and_kept(instance: str, squat: Path) -> None:
    squat.mkdir()
    _refused(instance, squat, "is a directory")
    assert reclaim_stale(instance) == []
    assert squat.is_dir()


def test_another_users_file_is_refused_and_kept(instance: str, squat: Path) -> None:
    require_root()
    squat.write_bytes(bytes(HEADER_SIZE))
    os.chown(squat, NOBODY, NOBODY)
    _refused(instance, squat, f"belongs to uid {NOBODY}")
    assert squat.exists()


def test_an_unfinished_segment_of_a_dead_creator_is_reclaimed(instance: str, squat: Path) -> None:
    """No magic yet (it goes last) and no lock: what a creator killed part-way leaves."""
    squat.write_bytes(bytes(2 * HEADER_SIZE))
    ring = BroadcastRing.create(instance, "ticks", REC, 64)
    ring.destroy()
    assert not squat.exists()


def test_a_dead_owners_pid_is_only_named_when_it_is_one(instance: str, squat: Path, caplog) -> None:
    # a complete header (magic) whose owner pid field holds garbage (the trial's value)
    header = bytearray(os.urandom(2 * HEADER_SIZE))
    header[: len(MAGIC)] = MAGIC
    offset = HEADER.fields["owner_pid"][1]
    header[offset : offset + 8] = (4192844032485778292).to_bytes(8, "little")
    squat.write_bytes(bytes(header))
    with caplog.at_level(logging.WARNING, logger="appliance.shm.segment"):
        ring = BroadcastRing.create(instance, "ticks", REC, 64)
    ring.destroy()
    (line,) = [r.getMessage() for r in caplog.records if "stale segment" in r.getMessage()]
    assert line.endswith("left by dead owner pid unknown"), line

"""Other local users: a stranger's semaphore is refused, an operator group may watch.

Each test acts as another uid in a forked child (see users.py), so the tests need root.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import posix_ipc
import pytest

from appliance.shm import BroadcastRing, RecordQueue, SegmentError, Stats, list_names
from appliance.shm.snapshot import SharedSnapshot
from tests.shm.procs import REC, make, shm_fds
from tests.shm.users import NOBODY, STRANGER, AsUser, as_user, require_root


def _mode(entry: str) -> tuple[int, int, int]:
    st = os.stat(f"/dev/shm/{entry}")
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_a_strangers_semaphore_is_refused_and_nothing_of_ours_stays(instance: str) -> None:
    require_root()
    planted = f"/{instance}.ticks.r3"

    def plant() -> None:  # open to everyone, to share our wake-ups
        os.umask(0)
        posix_ipc.Semaphore(planted, posix_ipc.O_CREX, mode=0o666).close()

    assert as_user(plant, NOBODY, NOBODY) == ("ok", None)
    fds = shm_fds()
    try:
        with pytest.raises(SegmentError, match=f"semaphore {planted} already exists and belongs"):
            BroadcastRing.create(instance, "ticks", REC, 64)
        assert list_names(instance) == [f"sem.{instance}.ticks.r3"]  # only the stranger's
        assert shm_fds() == fds
    finally:
        posix_ipc.unlink_semaphore(planted)


def test_our_own_leftover_semaphore_is_made_afresh(instance: str) -> None:
    name = f"/{instance}.q.c"
    old = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=3)
    os.chmod(f"/dev/shm/sem.{name[1:]}", 0o666)  # what a dead build might have left
    old_inode = os.stat(f"/dev/shm/sem.{name[1:]}").st_ino
    old.close()
    q = RecordQueue.create(instance, "q", REC, 64)
    try:
        st = os.stat(f"/dev/shm/sem.{name[1:]}")
        assert st.st_ino != old_inode and stat.S_IMODE(st.st_mode) == 0o600
        fresh = posix_ipc.Semaphore(name)
        assert fresh.value == 0
        fresh.close()
    finally:
        q.destroy()


def test_a_replaced_semaphore_neither_attaches_nor_blocks_destroy(instance: str) -> None:
    require_root()
    created_r, created_w = os.pipe()
    go_r, go_w = os.pipe()

    def owner() -> list[str]:  # a service user that is not root
        ring = BroadcastRing.create(instance, "ticks", REC, 64)
        os.write(created_w, b"c")
        os.read(go_r, 1)
        ring.destroy()
        return list_names(instance)

    child = AsUser(owner, STRANGER, STRANGER)
    name = f"/{instance}.ticks.r0"
    try:
        assert os.read(created_r, 1) == b"c"
        posix_ipc.unlink_semaphore(name)  # someone with the rights swaps one semaphore
        posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o666).close()
        with pytest.raises(SegmentError, match="does not belong to the segment's owner"):
            BroadcastRing.attach(instance, "ticks", REC)
    finally:
        os.write(go_w, b"g")
        destroyed = child.result()
        for fd in (created_r, created_w, go_r, go_w):
            os.close(fd)
        posix_ipc.unlink_semaphore(name)
    # destroy removed everything of its own and left the other file alone
    assert destroyed == ("ok", [f"sem.{instance}.ticks.r0"])


def test_an_operator_group_may_watch_and_nobody_else(instance: str) -> None:
    require_root()
    ring = BroadcastRing.create(instance, "ticks", REC, 64, group="nogroup")
    stats = Stats.create(instance, "stats", 4, ["events"], group=NOBODY)
    q = RecordQueue.create(instance, "q", REC, 64, group="nogroup")
    snap = SharedSnapshot.create(instance, "snap", np.dtype("<f8"), (2, 3), group="nogroup")
    try:
        writer = ring.writer()
        writer.write(make(0, 5))
        for entry in list_names(instance):
            assert _mode(entry) == (0, NOBODY, 0o660 if entry.startswith("sem.") else 0o640)

        def watch() -> int:
            r = BroadcastRing.attach(instance, "ticks", REC, read_only=True)
            published = r.publish_cursor
            assert r.readers() == []
            r.close()
            s = Stats.attach(instance, "stats", read_only=True)
            assert s.snapshot() == [] and s.counter_names == ["events"]
            s.close()
            RecordQueue.attach(instance, "q", REC, read_only=True).close()
            SharedSnapshot.attach(instance, "snap", np.dtype("<f8"), (2, 3), read_only=True).close()
            posix_ipc.Semaphore(f"/{instance}.q.c").close()  # 0660: the group opens it
            return published

        assert as_user(watch, STRANGER, NOBODY) == ("ok", 5)
        refused = as_user(watch, STRANGER, STRANGER)
        assert refused[0] == "error" and "permission denied" in refused[1]
        writer.close()
    finally:
        for structure in (snap, q, stats, ring):
            structure.destroy()


def test_an_unknown_group_is_refused_before_anything_exists(instance: str) -> None:
    with pytest.raises(SegmentError, match="group 'no-such-group' does not exist"):
        BroadcastRing.create(instance, "ticks", REC, 64, group="no-such-group")
    assert list_names(instance) == []


def test_a_group_the_creator_is_not_in_is_refused_and_leaves_nothing(instance: str) -> None:
    require_root()

    def create() -> None:
        BroadcastRing.create(instance, "ticks", REC, 64, group="nogroup")

    kind, message = as_user(create, STRANGER, STRANGER)
    assert kind == "error" and "must be a member of that group" in message, message
    assert list_names(instance) == []

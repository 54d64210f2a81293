"""SharedSnapshot: a seqlock'd array with tags, one writer, many readers."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.shm import SegmentInUse, SegmentMismatch
from appliance.shm.snapshot import VERSION, SharedSnapshot, SnapshotBusy
from tests.shm.procs import snapshot_writer


@pytest.fixture
def snap(instance):
    s = SharedSnapshot.create(instance, "pos", np.dtype("<f8"), (4, 2))
    yield s
    s.destroy()


def test_write_rows_and_tags_then_read_a_copy(snap):
    snap.write(np.ones((4, 2)), {0: 7, 2: 9})
    snap.write(np.full((1, 2), 5.0), {0: 8}, rows=np.array([2]))
    data, tags, version = snap.read()
    assert data[2].tolist() == [5.0, 5.0] and data[0].tolist() == [1.0, 1.0]
    assert tags[0] == 8 and tags[2] == 9 and snap.tag(0) == 8
    assert version % 2 == 0
    data[0, 0] = 99  # a copy: the shared array is untouched
    assert snap.read()[0][0, 0] == 1.0


def test_writer_killed_mid_write_does_not_flip_the_parity(snap):
    snap.write(np.ones((4, 2)))
    words = snap.segment.words(VERSION)
    words[0] = words[0] + 1  # what a writer killed between its two stores leaves
    with pytest.raises(SnapshotBusy, match="mid-write"):
        snap.read(timeout=0.05)
    snap.write(np.full((4, 2), 2.0))  # the next writer
    data, _, version = snap.read()
    assert version % 2 == 0 and (data == 2.0).all()


def test_attach_with_another_shape_of_the_same_size_is_refused(instance):
    snap = SharedSnapshot.create(instance, "pos", np.dtype("<f8"), (4, 8))
    try:
        with pytest.raises(SegmentMismatch, match=r"meta shape \[4, 8\] != expected \[8, 4\]"):
            SharedSnapshot.attach(instance, "pos", np.dtype("<f8"), (8, 4))
        SharedSnapshot.attach(instance, "pos", np.dtype("<f8"), (4, 8)).close()
    finally:
        snap.destroy()


def test_a_second_writer_is_refused_while_the_first_lives(instance, procs):
    snap = SharedSnapshot.create(instance, "pos", np.dtype("<f8"), (4, 2))
    try:
        release = procs.event()
        child = procs.start(snapshot_writer, "writer", instance, "pos", (4, 2), release)
        pid = procs.expect("wrote", "writer")
        with pytest.raises(SegmentInUse, match=rf"live writer \(pid {pid}\)"):
            snap.write(np.zeros((4, 2)))
        assert (snap.read()[0] == 7.0).all()  # untouched by the refused write
        release.set()
        assert procs.join(child) == 0
        snap.write(np.zeros((4, 2)))  # the role is free once its holder is gone
        assert (snap.read()[0] == 0.0).all()
    finally:
        snap.destroy()

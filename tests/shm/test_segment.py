"""Segments: headers that refuse a mismatch, live owners that are named, stale ones reclaimed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from appliance.model.records import INTENT, TICK
from appliance.shm import (
    BroadcastRing,
    RecordQueue,
    SegmentInUse,
    SegmentMismatch,
    SegmentMissing,
    UnsupportedArchitecture,
    list_names,
    remove_instance,
    require_tso,
)
from appliance.shm.segment import LAYOUT_VERSION, Segment, full_name, owner_alive
from tests.shm.procs import REC, own_ring

OTHER = np.dtype(  # same size as REC, different fields
    {"names": ["seq", "price"], "formats": ["<u8", "<f8"], "offsets": [0, 8], "itemsize": 64}
)


def test_create_attach_and_clean_up(instance: str) -> None:
    ring = BroadcastRing.create(instance, "ticks", TICK, 1024)
    try:
        other = BroadcastRing.attach(instance, "ticks", TICK, 1024)
        assert other.capacity == 1024
        assert other.segment.owner_pid == os.getpid()
        assert not other.segment.owner
        assert owner_alive(full_name(instance, "ticks"))
        other.close()
        names = list_names(instance)
        assert f"{instance}.ticks" in names
        assert len([n for n in names if n.startswith("sem.")]) == 16  # one doorbell a slot
    finally:
        ring.destroy()
    assert list_names(instance) == []
    assert not owner_alive(full_name(instance, "ticks"))


def test_attach_missing(instance: str) -> None:
    with pytest.raises(SegmentMissing, match="does not exist"):
        BroadcastRing.attach(instance, "nothing", TICK)


def test_attach_wrong_dtype_names_the_field(instance: str) -> None:
    ring = BroadcastRing.create(instance, "ticks", TICK, 64)
    try:
        with pytest.raises(SegmentMismatch, match="record dtype differs at field 1"):
            BroadcastRing.attach(instance, "ticks", INTENT)
        with pytest.raises(SegmentMismatch, match="record dtype differs at field 1"):
            BroadcastRing.attach(instance, "ticks", OTHER)
        with pytest.raises(SegmentMismatch, match="record size 64 != expected 8"):
            BroadcastRing.attach(instance, "ticks", np.dtype("<u8"))
    finally:
        ring.destroy()


def test_attach_wrong_capacity(instance: str) -> None:
    q = RecordQueue.create(instance, "intents", INTENT, 256)
    try:
        with pytest.raises(SegmentMismatch, match="capacity 256 != expected 512"):
            RecordQueue.attach(instance, "intents", INTENT, 512)
        RecordQueue.attach(instance, "intents", INTENT, 256).close()
        RecordQueue.attach(instance, "intents", INTENT).close()  # capacity not checked
    finally:
        q.destroy()


def test_attach_wrong_kind(instance: str) -> None:
    q = RecordQueue.create(instance, "intents", REC, 64)
    try:
        with pytest.raises(
            SegmentMismatch, match="kind 'recordqueue' != expected 'broadcast_ring'"
        ):
            BroadcastRing.attach(instance, "intents", REC)
    finally:
        q.destroy()


def test_attach_other_layout_version(instance: str) -> None:
    ring = BroadcastRing.create(instance, "ticks", REC, 64)
    try:
        ring.segment.header["version"] = LAYOUT_VERSION + 1  # a segment from another build
        with pytest.raises(SegmentMismatch, match=f"layout version {LAYOUT_VERSION + 1}"):
            BroadcastRing.attach(instance, "ticks", REC)
        ring.segment.header["version"] = LAYOUT_VERSION
        ring.segment.header["magic"] = b"NOTOURS!"
        with pytest.raises(SegmentMismatch, match="magic"):
            BroadcastRing.attach(instance, "ticks", REC)
    finally:
        ring.destroy()


def test_attach_something_too_small(instance: str) -> None:
    import posix_ipc

    name = full_name(instance, "tiny")
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=100)
    os.close(shm.fd)
    try:
        with pytest.raises(SegmentMismatch, match="smaller than a header"):
            Segment.attach(name, kind="broadcast_ring", dtype=REC)
    finally:
        posix_ipc.unlink_shared_memory(name)


def test_non_power_of_two_capacity(instance: str) -> None:
    for bad in (0, 1, 3, 1000, 1025):
        with pytest.raises(ValueError, match="power of two"):
            BroadcastRing.create(instance, "ticks", REC, bad)
        with pytest.raises(ValueError, match="power of two"):
            RecordQueue.create(instance, "q", REC, bad)
    assert list_names(instance) == []


def test_create_refused_while_another_process_owns_it(instance: str, procs) -> None:
    release = procs.event()
    child = procs.start(own_ring, "owner", instance, "ticks", 64, release)
    pid = procs.expect("created", "owner")
    assert pid == child.pid
    with pytest.raises(SegmentInUse, match=f"pid {pid}"):
        BroadcastRing.create(instance, "ticks", REC, 64)
    with pytest.raises(SegmentInUse, match=f"pid {pid}"):  # whatever the structure asked for
        RecordQueue.create(instance, "ticks", REC, 64)
    # refusing must not have disturbed it: it still attaches and its owner still holds it
    BroadcastRing.attach(instance, "ticks", REC, 64).close()
    assert owner_alive(full_name(instance, "ticks"))
    release.set()
    procs.expect("destroyed", "owner")
    assert procs.join(child) == 0


def test_stale_segment_of_a_killed_owner_is_reclaimed(instance: str, procs) -> None:
    release = procs.event()
    child = procs.start(own_ring, "owner", instance, "ticks", 64, release)
    dead_pid = procs.expect("created", "owner")
    procs.kill(child)
    assert f"{instance}.ticks" in list_names(instance)  # left behind
    assert not owner_alive(full_name(instance, "ticks"))
    # attaching to a stale segment still works (readers may drain it) ...
    BroadcastRing.attach(instance, "ticks", REC).close()
    # ... and creating reclaims it, with a different layout if it wants
    ring = BroadcastRing.create(instance, "ticks", REC, 128)
    try:
        assert ring.segment.owner_pid == os.getpid() != dead_pid
        assert ring.capacity == 128
        assert ring.publish_cursor == ring.claim_cursor == 0
    finally:
        ring.destroy()
    assert list_names(instance) == []


def test_remove_instance_after_a_crash(instance: str, procs) -> None:
    release = procs.event()
    child = procs.start(own_ring, "owner", instance, "ticks", 64, release)
    procs.expect("created", "owner")
    procs.kill(child)
    removed = remove_instance(instance)
    assert f"{instance}.ticks" in removed
    assert len(removed) == 17  # the segment and its 16 doorbell semaphores
    assert list_names(instance) == []


def test_require_tso() -> None:
    require_tso()  # this machine
    require_tso("x86_64")
    for machine in ("aarch64", "arm64", "ppc64le", "riscv64"):
        with pytest.raises(UnsupportedArchitecture, match=machine):
            require_tso(machine)

"""Segments: headers that refuse a mismatch, live owners that are named, stale ones reclaimed."""

from __future__ import annotations

import os
import re

import numpy as np
import posix_ipc
import pytest

from appliance.model.records import INTENT, TICK
from appliance.shm import (
    BroadcastRing,
    RecordQueue,
    SegmentInUse,
    SegmentMismatch,
    SegmentMissing,
    SegmentNameError,
    Stats,
    UnsupportedArchitecture,
    list_names,
    remove_instance,
    require_tso,
)
from appliance.shm.header import LAYOUT_VERSION, Expected
from appliance.shm.segment import Segment, full_name, owner_alive
from appliance.shm.snapshot import SharedSnapshot
from tests.shm.procs import REC, own_ring, shm_fds

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
    name = full_name(instance, "tiny")
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=100)
    os.close(shm.fd)
    try:
        with pytest.raises(SegmentMismatch, match="smaller than a header"):
            Segment.attach(name, Expected("broadcast_ring", REC))
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


def test_unlink_leaves_a_successor_of_the_name_alone(instance: str) -> None:
    first = BroadcastRing.create(instance, "ticks", REC, 64)
    remove_instance(instance)  # an operator cleans up while it runs ...
    second = BroadcastRing.create(instance, "ticks", REC, 64)  # ... and a new one starts
    try:
        first.destroy()  # the first stops: the name and semaphores are no longer its own
        assert len(list_names(instance)) == 17
        BroadcastRing.attach(instance, "ticks", REC).close()
    finally:
        second.destroy()


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("kind", b"\xff\xfe\xfd", "kind is not text"),
        ("dtype", b"\xff\xfe", "dtype is not text"),
        ("dtype", b"{not json", "record dtype is not a dtype description"),
        ("meta", b"\xc3(", "meta is not text"),
        ("meta", b'{"max_readers": 1', "meta is not valid JSON"),
        ("meta", b"[16]", "meta is list, expected an object"),
        ("meta", b"{}", "meta max_readers None != expected 16"),
        ("capacity", 1 << 40, "capacity 1099511627776 means"),
        ("capacity", 3, "capacity 3 is not a power of two"),
        ("data_offset", 0, "data_offset 0 != expected 4096"),
    ],
)
def test_half_valid_header_is_a_mismatch_naming_the_field(
    instance: str, field: str, value: object, complaint: str
) -> None:
    ring = BroadcastRing.create(instance, "ticks", REC, 64)
    try:
        ring.segment.header[field] = value  # the magic stays right
        fds = shm_fds()
        with pytest.raises(SegmentMismatch, match=re.escape(complaint)):
            BroadcastRing.attach(instance, "ticks", REC)
        assert shm_fds() == fds
    finally:
        ring.destroy()


def test_stats_meta_without_counters_is_a_mismatch(instance: str) -> None:
    stats = Stats.create(instance, "stats", 4, ["events"])
    try:
        stats.segment.header["meta"] = b'{"counters": 7}'
        fds = shm_fds()
        with pytest.raises(SegmentMismatch, match="meta counters 7 is not a list"):
            Stats.attach(instance, "stats")
        assert shm_fds() == fds
    finally:
        stats.destroy()


def test_missing_semaphore_is_a_mismatch_and_leaks_nothing(instance: str) -> None:
    q = RecordQueue.create(instance, "q", REC, 64)
    try:
        posix_ipc.unlink_semaphore(f"/{instance}.q.p")
        fds = shm_fds()
        with pytest.raises(SegmentMismatch, match=f"semaphore /{instance}.q.p is missing"):
            RecordQueue.attach(instance, "q", REC)
        assert shm_fds() == fds
    finally:
        q.destroy()


def test_names_too_long_are_refused_before_anything_exists() -> None:
    long = f"t{os.getpid()}" + "x" * 238  # 245 characters: the segment fits, r15 does not
    fds = shm_fds()
    try:
        with pytest.raises(SegmentNameError, match="semaphores' names need it to be at most"):
            BroadcastRing.create(long, "ticks", REC, 64)
        with pytest.raises(SegmentNameError, match="the limit is 255"):
            Stats.create(long + "y" * 20, "stats", 4, ["events"])
        with pytest.raises(SegmentNameError, match="without '/'"):
            RecordQueue.create("a/b", "q", REC, 64)
        assert list_names(long) == [] and shm_fds() == fds
    finally:
        remove_instance(long)


def test_a_header_field_that_does_not_fit_leaves_nothing(instance: str) -> None:
    with pytest.raises(ValueError, match="header field 'meta' takes 1024 bytes"):
        SharedSnapshot.create(instance, "snap", np.dtype("<f8"), (1,) * 400)
    assert list_names(instance) == []

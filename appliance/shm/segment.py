"""Named POSIX shared-memory segments with a self-describing, validated header.

Every segment starts with a 4 KiB header (magic, layout version, kind, record dtype,
capacity, owner pid, creation time) followed by the structure's own control block and
records. Attaching validates the header against what the caller expects, so a mismatch is
an error naming the field that differs, never a silent misread.

Ownership uses open-file-description (OFD) byte-range locks on the segment's file in
/dev/shm rather than pid checks alone: the kernel drops the lock the moment the owning
process dies, whatever the cause, and a recycled pid cannot impersonate a dead owner. The
creator holds the lock on byte 0 for as long as the segment is open; a segment found with
that lock free was left behind by a dead owner and is reclaimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import struct
import time
from typing import Any

import numpy as np
import posix_ipc

from appliance.shm.ordering import require_tso

log = logging.getLogger(__name__)

MAGIC = b"DYNSHM01"
LAYOUT_VERSION = 1
HEADER_SIZE = 4096
LINE = 128  # one cursor per 128 bytes: two 64-byte lines, so adjacent-line prefetch
# never makes two writers' cursors share a line

HEADER = np.dtype(
    {
        "names": [
            "magic",
            "version",
            "record_size",
            "kind",
            "capacity",
            "owner_pid",
            "created_ns",
            "total_size",
            "data_offset",
            "dtype",
            "meta",
        ],
        "formats": ["S8", "<u4", "<u4", "S16", "<u8", "<i8", "<i8", "<u8", "<u8", "S2048", "S1024"],
        "offsets": [0, 8, 12, 16, 32, 40, 48, 56, 64, 128, 2176],
        "itemsize": HEADER_SIZE,
    }
)

# Byte offsets in the segment file used as OFD lock targets (locks need not cover data).
OWNER_LOCK_BYTE = 0


class SegmentError(RuntimeError):
    """Base class for every shared-memory segment problem."""


class SegmentMismatch(SegmentError):
    """An existing segment's header differs from what the caller expects."""


class SegmentInUse(SegmentError):
    """A segment (or a role in it) is held by a live process."""


class SegmentMissing(SegmentError):
    """No segment of that name exists."""


def describe_dtype(dtype: np.dtype) -> str:
    """A canonical text form of a record dtype: names, formats, offsets and size."""
    if dtype.names is None:
        return json.dumps({"format": dtype.str, "itemsize": dtype.itemsize})
    fields = [[name, dtype.fields[name][0].str, dtype.fields[name][1]] for name in dtype.names]
    return json.dumps({"fields": fields, "itemsize": dtype.itemsize}, separators=(",", ":"))


def full_name(instance: str, name: str) -> str:
    """The POSIX name of a segment: instance prefix, then the structure's own name."""
    return f"/{instance}.{name}"


_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)


def _flock(kind: int, start: int) -> bytes:
    # struct flock on x86-64 Linux: short l_type, short l_whence, off_t l_start,
    # off_t l_len, pid_t l_pid (native alignment pads it to 32 bytes).
    return struct.pack("@hhqqi4x", kind, os.SEEK_SET, start, 1, 0)


def try_lock(fd: int, byte: int) -> bool:
    """Take an exclusive OFD lock on one byte of fd; False if another description holds it."""
    try:
        fcntl.fcntl(fd, _F_OFD_SETLK, _flock(fcntl.F_WRLCK, byte))
    except (BlockingIOError, PermissionError):
        return False
    return True


def unlock(fd: int, byte: int) -> None:
    fcntl.fcntl(fd, _F_OFD_SETLK, _flock(fcntl.F_UNLCK, byte))


def is_locked(fd: int, byte: int) -> bool:
    """True when some open file description holds a lock on that byte."""
    res = fcntl.fcntl(fd, _F_OFD_GETLK, _flock(fcntl.F_WRLCK, byte))
    return struct.unpack("@hhqqi4x", res)[0] != fcntl.F_UNLCK


class Segment:
    """One mapped segment. Use :meth:`create` (owner) or :meth:`attach` (user)."""

    def __init__(self, name: str, shm: posix_ipc.SharedMemory, owner: bool) -> None:
        self.name = name
        self.owner = owner
        self._fd = shm.fd  # kept open: OFD locks live as long as this description
        self._mmap = mmap.mmap(shm.fd, shm.size)
        self.header = np.frombuffer(self._mmap, dtype=HEADER, count=1)[0]
        self._closed = False

    # -- creation and attachment -------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        kind: str,
        dtype: np.dtype,
        capacity: int,
        data_size: int,
        meta: dict[str, Any] | None = None,
    ) -> Segment:
        """Create a segment exclusively; reclaim it if a dead owner left it behind."""
        require_tso()
        total = HEADER_SIZE + _round_up(data_size, mmap.PAGESIZE)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=total)
        except posix_ipc.ExistentialError:
            _reclaim_if_stale(name)
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=total)
        # Between O_CREX and the lock another starter could have taken the fresh file for
        # a stale one and unlinked it: only a locked file that still owns the name counts.
        if not try_lock(shm.fd, OWNER_LOCK_BYTE) or not _still_named(shm.fd, name):
            os.close(shm.fd)
            raise SegmentInUse(f"segment {name}: another process is creating it right now")
        seg = cls(name, shm, owner=True)
        h = seg.header
        h["owner_pid"] = os.getpid()
        h["version"] = LAYOUT_VERSION
        h["record_size"] = dtype.itemsize
        h["kind"] = kind.encode()
        h["capacity"] = capacity
        h["created_ns"] = time.time_ns()
        h["total_size"] = total
        h["data_offset"] = HEADER_SIZE
        h["dtype"] = describe_dtype(dtype).encode()
        h["meta"] = json.dumps(meta or {}).encode()
        h["magic"] = MAGIC  # last: a header with magic is complete
        return seg

    @classmethod
    def attach(
        cls,
        name: str,
        *,
        kind: str,
        dtype: np.dtype,
        capacity: int | None = None,
    ) -> Segment:
        """Map an existing segment after checking its header field by field."""
        require_tso()
        try:
            shm = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:
            raise SegmentMissing(f"segment {name} does not exist") from None
        if shm.size < HEADER_SIZE:
            size = shm.size  # read before closing: posix_ipc's size is an fstat of the fd
            os.close(shm.fd)
            raise SegmentMismatch(
                f"segment {name} is {size} bytes, smaller than a header: not a segment"
            )
        seg = cls(name, shm, owner=False)
        try:
            seg._validate(kind, dtype, capacity, shm.size)
        except SegmentError:
            seg.close()
            raise
        return seg

    def _validate(self, kind: str, dtype: np.dtype, capacity: int | None, size: int) -> None:
        h = self.header
        problems = []
        if bytes(h["magic"]) != MAGIC:
            raise SegmentMismatch(
                f"segment {self.name}: magic is {bytes(h['magic'])!r}, expected {MAGIC!r} "
                "(not a dynamind segment, or its creator died before finishing it)"
            )
        if int(h["version"]) != LAYOUT_VERSION:
            problems.append(f"layout version {int(h['version'])} != expected {LAYOUT_VERSION}")
        if h["kind"].decode() != kind:
            problems.append(f"kind {h['kind'].decode()!r} != expected {kind!r}")
        if int(h["record_size"]) != dtype.itemsize:
            problems.append(f"record size {int(h['record_size'])} != expected {dtype.itemsize}")
        if h["dtype"].decode() != describe_dtype(dtype):
            problems.append(_dtype_difference(h["dtype"].decode(), describe_dtype(dtype)))
        if capacity is not None and int(h["capacity"]) != capacity:
            problems.append(f"capacity {int(h['capacity'])} != expected {capacity}")
        if int(h["total_size"]) != size:
            problems.append(f"header says {int(h['total_size'])} bytes but segment has {size}")
        if problems:
            raise SegmentMismatch(f"segment {self.name}: " + "; ".join(problems))

    # -- accessors -----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return int(self.header["capacity"])

    @property
    def owner_pid(self) -> int:
        return int(self.header["owner_pid"])

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.header["meta"].decode())

    @property
    def fd(self) -> int:
        return self._fd

    def region(self, offset: int, size: int) -> memoryview:
        """A byte view of the data area, offset counted from the end of the header."""
        start = HEADER_SIZE + offset
        return memoryview(self._mmap)[start : start + size]

    def words(self, offset: int, count: int = 1) -> memoryview:
        """``count`` aligned int64 words at ``offset`` in the data area."""
        if offset % 8:
            raise ValueError(f"offset {offset} is not 8-byte aligned")
        return self.region(offset, 8 * count).cast("q")

    def array(self, offset: int, dtype: np.dtype, count: int) -> np.ndarray:
        """A zero-copy numpy view of ``count`` records at ``offset`` in the data area."""
        return np.frombuffer(self._mmap, dtype=dtype, count=count, offset=HEADER_SIZE + offset)

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap and close. Views handed out keep the mapping alive until collected."""
        if self._closed:
            return
        self._closed = True
        self.header = None
        # numpy views may still reference the mapping: then it goes with the last view
        with contextlib.suppress(BufferError):
            self._mmap.close()
        os.close(self._fd)  # drops any OFD locks this segment object held

    def unlink(self) -> None:
        """Remove the name; mappings stay valid until closed."""
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(self.name)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dtype_difference(found: str, expected: str) -> str:
    """Name the first field where two dtype descriptions part."""
    f, e = json.loads(found), json.loads(expected)
    ff, ef = f.get("fields", []), e.get("fields", [])
    for i in range(max(len(ff), len(ef))):
        a = ff[i] if i < len(ff) else None
        b = ef[i] if i < len(ef) else None
        if a != b:
            return f"record dtype differs at field {i}: segment has {a}, expected {b}"
    return f"record dtype differs: segment has {found}, expected {expected}"


def _still_named(fd: int, name: str) -> bool:
    try:
        return os.stat(f"/dev/shm/{name.lstrip('/')}").st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _reclaim_if_stale(name: str) -> None:
    """Unlink ``name`` if its owner is dead; raise SegmentInUse naming the live owner."""
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.ExistentialError:
        return  # vanished meanwhile
    try:
        pid = _peek_owner(shm)
        if not try_lock(shm.fd, OWNER_LOCK_BYTE):
            raise SegmentInUse(
                f"segment {name} exists and its owner (pid {pid}) is alive; "
                "stop that process or choose another instance name"
            )
        log.warning("reclaiming stale segment %s left by dead owner pid %s", name, pid)
        posix_ipc.unlink_shared_memory(name)
    finally:
        os.close(shm.fd)


def _peek_owner(shm: posix_ipc.SharedMemory) -> int | str:
    if shm.size < HEADER_SIZE:
        return "unknown"
    with mmap.mmap(shm.fd, HEADER_SIZE, prot=mmap.PROT_READ) as m:
        return int(np.frombuffer(m, dtype=HEADER, count=1)[0]["owner_pid"])


def owner_alive(name: str) -> bool:
    """True if the segment exists and its creator still holds it."""
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.ExistentialError:
        return False
    try:
        return is_locked(shm.fd, OWNER_LOCK_BYTE)
    finally:
        os.close(shm.fd)


def list_names(instance: str) -> list[str]:
    """Names of the segments and semaphores an instance has in /dev/shm."""
    try:
        entries = os.listdir("/dev/shm")
    except FileNotFoundError:
        return []
    prefix = f"{instance}."
    return sorted(e for e in entries if e.startswith(prefix) or e.startswith(f"sem.{prefix}"))


def remove_instance(instance: str) -> list[str]:
    """Unlink every segment and semaphore of an instance; returns what was removed."""
    removed = []
    for entry in list_names(instance):
        try:
            if entry.startswith("sem."):
                posix_ipc.unlink_semaphore("/" + entry[4:])
            else:
                posix_ipc.unlink_shared_memory("/" + entry)
            removed.append(entry)
        except posix_ipc.ExistentialError:
            pass
    return removed


def reclaim_stale(instance: str) -> list[str]:
    """Unlink an instance's segments whose owners are dead, and semaphores left orphaned.

    Segments with a live owner are left alone (creating one of the same name will then
    fail with a message naming the owner).
    """
    removed = []
    for entry in list_names(instance):
        if not entry.startswith("sem.") and not owner_alive("/" + entry):
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_shared_memory("/" + entry)
                removed.append(entry)
    segments = {e for e in list_names(instance) if not e.startswith("sem.")}
    for entry in list_names(instance):
        # semaphore names are "<segment>.<suffix>": orphaned once the segment is gone
        if entry.startswith("sem.") and entry[4:].rsplit(".", 1)[0] not in segments:
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_semaphore("/" + entry[4:])
                removed.append(entry)
    return removed

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

Names are unlinked only while they still name the file the unlinker holds (same inode):
two starters reclaiming one stale name can then never remove each other's fresh segment,
and an owner never removes a successor that took its name over. A new segment's pages are
reserved at creation (see files.py), and every error path closes what it opened and
removes what it created.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import stat
import time
from typing import Any

import numpy as np
import posix_ipc

from appliance.shm.errors import (
    SegmentError,
    SegmentInUse,
    SegmentMismatch,
    SegmentMissing,
    SegmentTaken,
)
from appliance.shm.files import (
    Access,
    check_name,
    describe_file,
    list_names,
    not_ours,
    reserve,
    same_file,
    shm_path,
)
from appliance.shm.header import (
    HEADER,
    HEADER_SIZE,
    MAGIC,
    Expected,
    check_header,
    segment_bytes,
    write_header,
)
from appliance.shm.locks import is_locked, try_lock
from appliance.shm.ordering import require_tso
from appliance.shm.semaphore import remove_leftover

log = logging.getLogger(__name__)

LINE = 128  # one cursor per 128 bytes: two 64-byte lines, so adjacent-line prefetch
# never makes two writers' cursors share a line

# Byte offsets in the segment file used as OFD lock targets (locks need not cover data).
OWNER_LOCK_BYTE = 0
PID_MAX = 1 << 22  # the kernel's largest pid_max: a bigger "owner pid" was never one
# Creating after a stale segment was reclaimed can lose to another starter; each loss
# either ends in SegmentInUse or leaves the name free to try again.
_CREATE_TRIES = 10


def full_name(instance: str, name: str) -> str:
    """The POSIX name of a segment: instance prefix, then the structure's own name."""
    return f"/{instance}.{name}"


class Segment:
    """One mapped segment. Use :meth:`create` (owner) or :meth:`attach` (user)."""

    def __init__(self, name: str, fd: int, size: int, owner: bool, read_only: bool = False) -> None:
        self.name = name
        self.owner = owner
        self.read_only = read_only
        self.access = Access()  # the owner's choice, for the structure's semaphores
        self.meta: dict[str, Any] = {}
        st = os.fstat(fd)
        self.uid = st.st_uid  # the owner's: an attacher checks semaphores against it
        self._inode = st.st_ino
        prot = mmap.PROT_READ if read_only else mmap.PROT_READ | mmap.PROT_WRITE
        self._mmap = mmap.mmap(fd, size, prot=prot)
        self._fd = fd  # kept open: OFD locks live as long as this description
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
        group: int | str | None = None,
    ) -> Segment:
        """Create a segment exclusively; reclaim it if a dead owner left it behind.

        ``group``: a group (name or id) whose members may read the segment; its semaphores
        (made by the structure) then let that group open them too.
        """
        require_tso()
        check_name(name)
        access = Access.for_group(group)
        total = segment_bytes(data_size)
        fd = _create_owned(name, access.segment_mode)
        try:
            access.apply(fd, access.segment_mode, f"segment {name}")
            reserve(fd, total, name)
            seg = cls(name, fd, total, owner=True)
        except BaseException:
            _unlink_if_named(name, os.fstat(fd).st_ino)
            os.close(fd)
            raise
        try:
            seg.access = access
            seg.meta = dict(meta or {})
            seg.header["owner_pid"] = os.getpid()
            seg.header["created_ns"] = time.time_ns()
            write_header(
                seg.header, kind=kind, dtype=dtype, capacity=capacity, total=total, meta=seg.meta
            )
        except BaseException:
            seg.unlink()
            seg.close()
            raise
        return seg

    @classmethod
    def attach(cls, name: str, expected: Expected, read_only: bool = False) -> Segment:
        """Map an existing segment after checking its header field by field.

        ``read_only`` maps it without write access: enough to watch it, and all a member
        of the owner's group may do.
        """
        require_tso()
        check_name(name)
        try:
            shm = posix_ipc.SharedMemory(name, read_only=read_only)
        except posix_ipc.ExistentialError:
            raise SegmentMissing(f"segment {name} does not exist") from None
        except posix_ipc.PermissionsError:
            raise SegmentError(
                f"segment {name}: permission denied ({describe_file(shm_path(name))})"
            ) from None
        fd = shm.fd
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise SegmentMismatch(
                    f"segment {name} is {size} bytes, smaller than a header: not a segment"
                )
            seg = cls(name, fd, size, owner=False, read_only=read_only)
        except BaseException:
            os.close(fd)
            raise
        try:
            seg.meta = check_header(seg.header, name, expected, size)
        except BaseException:
            seg.close()
            raise
        return seg

    # -- accessors -----------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return int(self.header["capacity"])

    @property
    def owner_pid(self) -> int:
        return int(self.header["owner_pid"])

    @property
    def fd(self) -> int:
        return self._fd

    def truncated(self) -> str | None:
        """What is wrong when the file behind the mapping is now shorter than the mapping
        (touching the missing pages would kill this process with SIGBUS), else None. Only
        the owner or root can truncate a segment: readers that map another process's
        segments ask before each look."""
        size = os.fstat(self._fd).st_size
        if size >= len(self._mmap):
            return None
        return f"segment {self.name} is {size} bytes, mapped as {len(self._mmap)}"

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
        """Remove the name if it is still this segment's; mappings stay valid until closed."""
        _unlink_if_named(self.name, self._inode)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create_owned(name: str, mode: int) -> int:
    """The fd of a new, locked file that ``name`` names; SegmentInUse if anyone else won."""
    for _ in range(_CREATE_TRIES):
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=mode)
        except posix_ipc.ExistentialError:
            if (pid := _reclaim_if_stale(name)) is not None:
                log.warning("reclaiming stale segment %s left by dead owner pid %s", name, pid)
            continue
        except posix_ipc.PermissionsError as exc:
            raise SegmentError(f"segment {name}: cannot create it ({exc})") from None
        # Between O_CREX and the lock another starter could have taken the fresh file for
        # a stale one and unlinked it: only a locked file that still owns the name counts.
        if try_lock(shm.fd, OWNER_LOCK_BYTE) and same_file(shm_path(name), os.fstat(shm.fd).st_ino):
            return shm.fd
        os.close(shm.fd)
        raise SegmentInUse(f"segment {name}: another process is creating it right now")
    raise SegmentInUse(f"segment {name}: other processes keep creating and removing it")


def _reclaim_if_stale(name: str) -> str | None:
    """Unlink ``name`` if its owner is dead: the dead owner's pid (``unknown`` when the
    header holds none); None when there was nothing to reclaim. SegmentInUse names a live
    owner.

    The lock is taken on the file opened here, so the name is unlinked only while it still
    names that file: another starter may have reclaimed it and created a successor since.
    A file that is not ours (another user's, a directory, not a dynamind segment) is never
    removed: SegmentTaken names it.
    """
    path = shm_path(name)
    try:
        _refuse_foreign(name, os.stat(path, follow_symlinks=False))
        shm = posix_ipc.SharedMemory(name)
    except (FileNotFoundError, posix_ipc.ExistentialError):
        return None  # vanished meanwhile
    except posix_ipc.PermissionsError:
        raise SegmentTaken(
            f"segment {name} exists and is not ours ({describe_file(path)}): remove {path} "
            "or choose another instance name"
        ) from None
    try:
        st = os.fstat(shm.fd)
        _refuse_foreign(name, st)
        pid = _peek_owner(shm.fd, st.st_size)
        if not try_lock(shm.fd, OWNER_LOCK_BYTE):
            raise SegmentInUse(
                f"segment {name} exists and its owner (pid {pid}) is alive; "
                "stop that process or choose another instance name"
            )
        foreign = _not_a_segment(shm.fd, st.st_size)
        if foreign:
            raise SegmentTaken(
                f"segment {name} exists but is not a dynamind segment ({foreign}): refusing "
                f"to remove it; remove {path} if it is junk, or choose another instance name"
            )
        if not _unlink_if_named(name, st.st_ino):
            return None  # someone reclaimed it first; the name is theirs now
        return str(pid)
    finally:
        os.close(shm.fd)


def _unlink_if_named(name: str, inode: int) -> bool:
    """Unlink ``name`` only while it names the file ``inode`` (the caller holds it open)."""
    if not same_file(shm_path(name), inode):
        return False
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        return False
    return True


def _refuse_foreign(name: str, st: os.stat_result) -> None:
    problem = not_ours(st)
    if problem:
        raise SegmentTaken(
            f"segment {name} exists and {problem}: remove {shm_path(name)} or choose another "
            "instance name"
        )


def _magic(fd: int, size: int) -> bytes | None:
    """The first bytes of a segment file, where its magic goes; None if it is too short."""
    if size < HEADER_SIZE:
        return None
    with mmap.mmap(fd, HEADER_SIZE, prot=mmap.PROT_READ) as m:
        return bytes(m[: len(MAGIC)])


def _not_a_segment(fd: int, size: int) -> str | None:
    """Why a file is not a dynamind segment, or None. A creator that died part-way leaves
    an empty file (before reserving) or one with no magic yet (zeros: magic goes last)."""
    if size == 0:
        return None
    magic = _magic(fd, size)
    if magic is None:
        return f"{size} bytes, smaller than a segment header"
    if magic in (MAGIC, bytes(len(MAGIC))):
        return None
    return f"it starts with {magic!r}, not the magic {MAGIC!r}"


def _peek_owner(fd: int, size: int) -> int | str:
    """The creator's pid from a complete header; "unknown" when there is none or the
    field holds no pid (a file that only has our name)."""
    if _magic(fd, size) != MAGIC:
        return "unknown"
    with mmap.mmap(fd, HEADER_SIZE, prot=mmap.PROT_READ) as m:
        pid = int(np.frombuffer(m, dtype=HEADER, count=1)[0]["owner_pid"])
    return pid if 0 < pid <= PID_MAX else "unknown"


def owner_alive(name: str) -> bool:
    """True if the segment exists and its creator still holds it."""
    return live_owner(name) is not None


def live_owner(name: str) -> int | str | None:
    """The pid of the live creator holding the segment ("unknown" while it is still
    writing the header); None if there is no such segment or its creator is dead."""
    try:
        if not stat.S_ISREG(os.stat(shm_path(name)).st_mode):
            return None  # a directory in its place: no owner (creating it is refused)
        shm = posix_ipc.SharedMemory(name, read_only=True)
    except (FileNotFoundError, posix_ipc.ExistentialError):
        return None
    except posix_ipc.PermissionsError:
        raise SegmentTaken(
            f"segment {name} exists and is not ours ({describe_file(shm_path(name))}): "
            "is another user running this instance? Or choose another instance name"
        ) from None
    try:
        if not is_locked(shm.fd, OWNER_LOCK_BYTE):
            return None
        return _peek_owner(shm.fd, os.fstat(shm.fd).st_size) or "unknown"
    finally:
        os.close(shm.fd)


def remove_instance(instance: str) -> list[str]:
    """Unlink every segment and semaphore of an instance; returns what was removed.

    For an operator cleaning up after a crash: it does not ask whether owners are alive.
    """
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
    fail with a message naming the owner), and so is anything another user owns.
    """
    removed = []
    for entry in list_names(instance):
        if not entry.startswith("sem."):
            with contextlib.suppress(SegmentError):
                if _reclaim_if_stale("/" + entry) is not None:
                    removed.append(entry)
    segments = {e for e in list_names(instance) if not e.startswith("sem.")}
    for entry in list_names(instance):
        # semaphore names are "<segment>.<suffix>": orphaned once the segment is gone
        if entry.startswith("sem.") and entry[4:].rsplit(".", 1)[0] not in segments:
            with contextlib.suppress(SegmentError):
                if remove_leftover("/" + entry[4:]):
                    removed.append(entry)
    return removed

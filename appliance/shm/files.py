"""The shared-memory filesystem under the segments: names, sizes, free space, permissions.

On Linux a POSIX shared-memory object ``/x`` is the file ``/dev/shm/x`` and a named
semaphore ``/x`` is ``/dev/shm/sem.x`` (a one-page file), both on a tmpfs. Knowing that
lets the segments check names before creating anything, reserve their space so a full
tmpfs is an error at creation rather than a SIGBUS at the first write, tell whether a name
still points at the file a process holds (by inode), and set group permissions.
"""

from __future__ import annotations

import contextlib
import grp
import mmap
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.shm.errors import SegmentError, SegmentNameError

SHM_DIR = "/dev/shm"
NAME_MAX = 255  # bytes in one file name
SEM_PREFIX = "sem."  # what glibc puts before a semaphore's name in SHM_DIR
PAGE = mmap.PAGESIZE
SEMAPHORE_BYTES = PAGE  # a semaphore file holds a 32-byte sem_t: tmpfs charges a page


def shm_path(name: str) -> str:
    """The file behind the shared-memory object ``name`` ("/x")."""
    return f"{SHM_DIR}/{name[1:]}"


def sem_path(name: str) -> str:
    """The file behind the named semaphore ``name`` ("/x")."""
    return f"{SHM_DIR}/{SEM_PREFIX}{name[1:]}"


def check_name(name: str, semaphore_suffixes: Iterable[str] = ()) -> None:
    """Refuse a segment name, or the names of its semaphores, before anything exists.

    Semaphore names are ``<segment name>.<suffix>`` and their files carry a four-byte
    prefix, so a name can fit as a segment and still fail as a semaphore later.
    """
    if not name.startswith("/") or len(name) < 2 or "/" in name[1:] or "\0" in name:
        raise SegmentNameError(
            f"segment name {name!r} must be '/' followed by a name without '/' or NUL"
        )
    size = len(name[1:].encode())
    if size > NAME_MAX:
        raise SegmentNameError(
            f"segment name {name[:48]!r}... is {size} bytes; the limit is {NAME_MAX}"
        )
    longest = max((len(s.encode()) for s in semaphore_suffixes), default=None)
    if longest is not None and len(SEM_PREFIX) + size + 1 + longest > NAME_MAX:
        room = NAME_MAX - len(SEM_PREFIX) - 1 - longest
        raise SegmentNameError(
            f"segment name {name[:48]!r}... is {size} bytes; its semaphores' names need "
            f"it to be at most {room}"
        )


def free_bytes() -> int:
    """Bytes an unprivileged process may still allocate in the shared-memory filesystem."""
    st = os.statvfs(SHM_DIR)
    return st.f_bavail * st.f_frsize


_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def format_bytes(n: int) -> str:
    """``n`` bytes for people: 4.0 MiB."""
    value, unit = float(n), 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{n} B" if unit == 0 else f"{value:.1f} {_UNITS[unit]}"


def reserve(fd: int, size: int, name: str) -> None:
    """Give ``fd`` its size with every page allocated now, or fail saying how much is free.

    Only setting the size (ftruncate) leaves a sparse file: the first store to a page the
    tmpfs cannot supply kills the process with SIGBUS, long after creation succeeded.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise SegmentError(
            f"segment {name} needs {format_bytes(size)} of shared memory but {SHM_DIR} has "
            f"only {format_bytes(free_bytes())} free ({exc.strerror}): enlarge {SHM_DIR} "
            "(a container's --shm-size) or lower the capacities"
        ) from None


def list_names(instance: str) -> list[str]:
    """Names of the segments and semaphores an instance has in the shm directory."""
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    prefix = f"{instance}."
    return sorted(e for e in entries if e.startswith(prefix) or e.startswith(SEM_PREFIX + prefix))


def instance_bytes(instance: str) -> int:
    """Bytes the instance's files hold in the shm directory now."""
    total = 0
    for entry in list_names(instance):
        with contextlib.suppress(FileNotFoundError):  # gone meanwhile
            total += os.stat(f"{SHM_DIR}/{entry}").st_blocks * 512
    return total


def check_space(needed: int, instance: str) -> None:
    """Refuse early when ``needed`` bytes will not fit; the instance's own leftovers count
    as free (a start reclaims them, or is refused because the instance is running)."""
    free = free_bytes() + instance_bytes(instance)
    if needed > free:
        raise SegmentError(
            f"instance {instance} needs {format_bytes(needed)} of shared memory but "
            f"{SHM_DIR} has only {format_bytes(free)} free: enlarge {SHM_DIR} "
            "(a container's --shm-size) or lower the capacities"
        )


def same_file(path: str, inode: int) -> bool:
    """True while ``path`` names the file with inode ``inode`` (not a successor of it).

    The caller keeps that file open, so its inode number cannot be reused meanwhile.
    """
    try:
        return os.stat(path, follow_symlinks=False).st_ino == inode
    except FileNotFoundError:
        return False


def not_ours(st: os.stat_result) -> str | None:
    """Why the file ``st`` describes, found at one of our names, is not ours to use or
    remove (another user's, or not a regular file); None if it is this user's file."""
    if not stat.S_ISREG(st.st_mode):
        return "is a directory" if stat.S_ISDIR(st.st_mode) else "is not a regular file"
    if st.st_uid != os.geteuid():
        return (
            f"belongs to uid {st.st_uid} (mode {st.st_mode & 0o777:o}), not to this "
            f"process (uid {os.geteuid()})"
        )
    return None


def describe_file(path: str) -> str:
    """Owner, group and mode of a file, for error messages."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return "gone"
    return f"uid {st.st_uid}, gid {st.st_gid}, mode {st.st_mode & 0o777:o}"


@dataclass(frozen=True)
class Access:
    """Who besides the owner may use a segment: nobody, or the members of one group.

    With a group, segments are 0640 (the group reads them: status, monitoring) and
    semaphores 0660 (opening a semaphore needs both); without, both are 0600. Never any
    permission for others.
    """

    gid: int | None = None

    @classmethod
    def for_group(cls, group: int | str | None) -> Access:
        if group is None:
            return cls()
        if isinstance(group, int):
            return cls(group)
        try:
            return cls(grp.getgrnam(group).gr_gid)
        except KeyError:
            raise SegmentError(f"group {group!r} does not exist on this machine") from None

    @property
    def segment_mode(self) -> int:
        return 0o600 if self.gid is None else 0o640

    @property
    def semaphore_mode(self) -> int:
        return 0o600 if self.gid is None else 0o660

    def apply(self, target: int | str, mode: int, what: str) -> None:
        """Set ``mode`` (whatever the umask removed) and the group on an fd or a path."""
        if self.gid is None:
            return
        try:
            os.chmod(target, mode)
            os.chown(target, -1, self.gid)
        except PermissionError as exc:
            raise SegmentError(
                f"{what}: cannot give it to group {self.gid} ({exc.strerror}); the process "
                "creating it must be a member of that group"
            ) from None

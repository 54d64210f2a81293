"""Named semaphores that no other user can slip in: created exclusively, owner-checked.

A semaphore is a file in the shm directory like a segment, and any local user can create
one under a name they expect us to use. Opened create-if-missing, such a semaphore would
be shared with its creator, who could then swallow every wake-up. So the owner creates
each semaphore exclusively; a leftover of its own (a dead incarnation's) is removed and
made afresh, anything else is refused. Attachers check that a semaphore belongs to the
segment's owner, and removal checks the inode, so a file that replaced ours is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os

import posix_ipc

from appliance.shm.errors import SegmentError, SegmentInUse, SegmentMismatch, SegmentTaken
from appliance.shm.files import Access, describe_file, not_ours, same_file, sem_path

log = logging.getLogger(__name__)

_CREATE_TRIES = 3


def create_semaphore(name: str, access: Access) -> tuple[posix_ipc.Semaphore, int]:
    """A new semaphore of ours at zero, and its inode; a foreign one of that name is refused."""
    for _ in range(_CREATE_TRIES):
        try:
            sem = posix_ipc.Semaphore(
                name, posix_ipc.O_CREX, mode=access.semaphore_mode, initial_value=0
            )
        except posix_ipc.ExistentialError:
            remove_leftover(name)
            continue
        except posix_ipc.PermissionsError as exc:
            raise SegmentError(f"semaphore {name}: cannot create it ({exc})") from None
        try:
            inode = os.stat(sem_path(name)).st_ino
            access.apply(sem_path(name), access.semaphore_mode, f"semaphore {name}")
        except BaseException:
            with contextlib.suppress(posix_ipc.Error):
                sem.unlink()
            sem.close()
            raise
        return sem, inode
    raise SegmentInUse(f"semaphore {name}: another process keeps creating it")


def open_semaphore(name: str, owner_uid: int) -> tuple[posix_ipc.Semaphore, int]:
    """An existing semaphore that belongs to ``owner_uid``, and its inode."""
    try:
        sem = posix_ipc.Semaphore(name)
    except posix_ipc.ExistentialError:
        raise SegmentMismatch(
            f"semaphore {name} is missing (its segment's creator died before making it, "
            "or it was removed)"
        ) from None
    except posix_ipc.PermissionsError:
        raise SegmentError(
            f"semaphore {name}: permission denied ({describe_file(sem_path(name))})"
        ) from None
    try:
        st = os.stat(sem_path(name), follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is None or st.st_uid != owner_uid:
        sem.close()
        raise SegmentError(
            f"semaphore {name} ({describe_file(sem_path(name))}) does not belong to the "
            f"segment's owner (uid {owner_uid}): refusing to use it"
        )
    return sem, st.st_ino


def unlink_semaphore(name: str, inode: int) -> str | None:
    """Remove our semaphore, unless the name now holds another file (left alone, with a
    warning if a stranger's). Returns what stopped the removal of ours, if anything."""
    if not same_file(sem_path(name), inode):
        with contextlib.suppress(FileNotFoundError):
            if os.stat(sem_path(name), follow_symlinks=False).st_uid != os.geteuid():
                who = describe_file(sem_path(name))
                log.warning("semaphore %s was replaced by a stranger's (%s): left alone", name, who)
        return None
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        return None
    except posix_ipc.PermissionsError as exc:
        return f"semaphore {name}: {exc}"
    return None


def remove_leftover(name: str) -> bool:
    """Unlink a semaphore a dead incarnation of ours left (True); refuse anybody else's."""
    try:
        st = os.stat(sem_path(name), follow_symlinks=False)
    except FileNotFoundError:
        return False
    problem = not_ours(st)
    if problem:
        raise SegmentTaken(
            f"semaphore {name} already exists and {problem}: refusing to share it; "
            f"remove {sem_path(name)} or choose another instance name"
        )
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        return False
    return True

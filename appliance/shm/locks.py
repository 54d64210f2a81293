"""Open-file-description (OFD) byte-range locks: who holds a segment or a role in it.

An OFD lock belongs to one open file description, not to a process, and the kernel drops
it the moment the last descriptor of that description closes, whatever ends the holder.
A recycled pid cannot impersonate a dead holder, and two descriptions of one file in one
process still exclude each other. Locks are advisory and need not cover data: each lock
is one byte standing for a role.
"""

from __future__ import annotations

import fcntl
import os
import struct

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
    """True when some open file description holds a lock on that byte (works read-only)."""
    res = fcntl.fcntl(fd, _F_OFD_GETLK, _flock(fcntl.F_WRLCK, byte))
    return struct.unpack("@hhqqi4x", res)[0] != fcntl.F_UNLCK

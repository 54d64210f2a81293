"""The operator's line to the execution process: trading state changes from the CLI.

`dynamind trading halt|reduce-only|resume` and `dynamind flatten` (state ``FLATTEN``)
connect to a Unix stream socket, send one JSON line ``{"state", "reason"}`` and read one
JSON line back: the outcome, after execution has journaled the change and cancelled (or
sent) what it had to. The execution process listens and answers between batches.

Where: the socket ``trading`` in the desk's directory beside the journal, the journal's
name with ``.desk`` for its suffix (``var/journal.desk/`` for ``var/journal.sqlite``:
``desk_dir``). The appliance and the CLI derive it from the same config; a relative
journal_path resolves against the current directory, as every path of the config does.
The directory belongs to the appliance's user and is 0700, or 0750
with ``operator_group`` (the directory and the socket, 0660, are given to that group), so
nobody else can bind a name in it or even reach the socket. Both ends bind and connect
through ``/proc/self/fd/<fd of the directory>/trading``: that path is short whatever the
directory's (a socket path has 108 bytes), and it is the very directory that was checked,
never one a symlink swapped in meanwhile.

Trust, both ways:

- Who asks is what the kernel says of the connecting process (SO_PEERCRED: pid, uid),
  not a name the client claims: that is what the journal records. The appliance's own
  user, root and members of ``operator_group`` may change the trading state; anyone else
  is refused before a byte is read.
- Who answers: the desk's directory must be a real directory (not a symlink), writable by
  its owner only and closed to others, owned by the owner of the directory it is in (the
  journal's, the appliance's user's: a desk of anyone else there was made by someone who
  could write in a shared directory, or before us); and the process listening must be
  that owner or root (SO_PEERCRED of the connected socket). Otherwise the client says who
  it found and sends nothing: a fake desk's answer is never taken for an outcome.
- The appliance refuses the same directory at start when it is not its own (``DeskTaken``:
  exit 16, as for a squatted shared-memory name; another user's, a symlink, a file, open
  to others) and makes it when it is missing. A socket file of its own in it is a dead
  predecessor's: a restarted execution removes it and binds again at once. Execution
  never ends because of its desk: if the directory is refused after the start, it logs why,
  trades on under its risk checks and tries again every ``RETRY_S``.

Unlike a signal, the request carries what and why, and the operator gets an answer, or
a clear error when execution is not there to answer.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import pwd
import socket
import stat
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.5
RETRY_S = 5.0  # how often execution tries again to open a desk it could not open
FLATTEN = "flatten"  # not a trading state: reduce-only, then close every position
MAX_REQUEST = 4096
SOCKET = "trading"  # the socket's name in the desk's directory
SUFFIX = ".desk"  # the directory: the journal's name with this suffix
_UCRED = struct.Struct("3i")  # pid, uid, gid
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def desk_dir(journal_path: str | os.PathLike[str]) -> Path:
    """The desk's directory of the appliance whose journal is ``journal_path``.

    Not ``journal.sqlite.desk``: tools that archive or copy ``journal.sqlite*`` take the
    journal's side files (-wal, -shm, .metrics.npz) for files, and a directory is not one.
    """
    path = Path(journal_path)
    return path.with_suffix(SUFFIX) if path.suffix != SUFFIX else Path(f"{path}{SUFFIX}")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _who(uid: int) -> str:
    name = user_name(uid)
    return name if name.startswith("uid ") else f"uid {uid} ({name})"


def _describe(st: os.stat_result) -> str:
    return f"{_who(st.st_uid)}, gid {st.st_gid}, mode {stat.S_IMODE(st.st_mode):o}"


class DeskError(RuntimeError):
    """The desk's directory cannot be used: it cannot be made, or it lies where other
    users could have made it."""


class DeskTaken(DeskError):
    """The desk's directory or socket is not the appliance's: another user's, a symlink
    or not a directory, open to others; or the process answering there is not its owner."""


class NotPermitted(RuntimeError):
    """The calling user may not reach the desk (the file system says so)."""


class NotListening(RuntimeError):
    """No execution process answers for the instance (not running, or restarting)."""


def _peer(sock: socket.socket) -> tuple[int, int, int]:
    """pid, uid, gid of the process at the other end, as the kernel recorded them."""
    pid, uid, gid = _UCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    )
    return pid, uid, gid


def _open_desk(path: Path) -> tuple[int, os.stat_result, os.stat_result]:
    """An O_PATH descriptor of the desk's directory (never through a symlink in its place),
    its stat and its parent's. FileNotFoundError (or NotADirectoryError, for the parent)
    when there is none; DeskTaken when something else has its name."""
    parent = os.open(path.parent, _DIR)
    try:
        parent_st = os.fstat(parent)
        try:
            fd = os.open(path.name, _DIR | os.O_NOFOLLOW, dir_fd=parent)
        except NotADirectoryError:  # a symlink or a file has the name
            st = os.stat(path.name, dir_fd=parent, follow_symlinks=False)
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise DeskTaken(
                f"trading desk {path} exists and is {kind} ({_describe(st)}): remove it if "
                "it is junk, or choose another journal_path"
            ) from None
    finally:
        os.close(parent)
    return fd, os.fstat(fd), parent_st


def _unsafe_parent(path: Path, parent: os.stat_result, owner: int) -> DeskError | None:
    """Why the directory holding the desk's is not ``owner``'s, or None.

    The journal's directory is the appliance's user's (it writes the journal and its -wal
    there). A desk owned by anyone but that directory's owner was made by someone who
    could write there too, or before (a shared or sticky directory such as /tmp): never
    the appliance's.
    """
    if parent.st_uid == owner:
        return None
    return DeskError(
        f"trading desk {path}: the directory it is in, {path.parent.absolute()}, belongs to "
        f"{_who(parent.st_uid)}, not to {_who(owner)} ({_describe(parent)}), so a desk "
        "there could be anyone's: give journal_path a directory of the service user's"
    )


def _problem(
    path: Path, st: os.stat_result, parent: os.stat_result, owner: int
) -> DeskError | None:
    """Why the desk's directory is not ``owner``'s private one, or None."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != owner:
        why = f"belongs to {_who(st.st_uid)}, not to {_who(owner)}"
    elif mode & 0o022:
        why = f"may be written by its group or by others (mode {mode:o})"
    elif mode & 0o007:
        why = f"may be entered by others (mode {mode:o})"
    else:
        return _unsafe_parent(path, parent, owner)
    return DeskTaken(
        f"trading desk {path} exists and {why}: not made by dynamind; remove {path} if it is "
        "junk, or choose another journal_path"
    )


def refusal(path: Path) -> DeskError | None:
    """Why a start of this process's appliance would refuse the desk's directory
    ``path``, reading only; None when it is ours or not there yet (the start makes it)."""
    owner = os.geteuid()
    try:
        fd, st, parent = _open_desk(path)
    except (FileNotFoundError, NotADirectoryError):
        try:
            return _unsafe_parent(path, os.stat(path.parent), owner)
        except OSError:
            return None  # no parent yet: made with the journal's (or refused as its)
    except DeskError as exc:
        return exc
    except OSError as exc:
        return DeskError(f"trading desk {path}: cannot open it ({exc.strerror})")
    os.close(fd)
    return _problem(path, st, parent, owner)


def prepare(path: Path, operator_group: str | None) -> int:
    """The desk's directory made ours or refused: an O_PATH descriptor of it, 0700 (0750
    and the operator group's with one). DeskTaken when it is someone else's."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeskError(f"trading desk {path}: cannot create {path.parent} ({exc})") from None
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass  # checked below like anything found there
    except OSError as exc:
        raise DeskError(f"trading desk {path}: cannot create it ({exc.strerror})") from None
    try:
        fd, st, parent = _open_desk(path)
    except OSError as exc:  # removed or replaced meanwhile, or not ours to open
        raise DeskError(f"trading desk {path}: cannot open it ({exc.strerror})") from None
    try:
        if problem := _problem(path, st, parent, os.geteuid()):
            raise problem
        _restrict(fd, st, path, operator_group)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _gid(group: str, path: Path) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise DeskError(f"trading desk {path}: no group named {group!r}") from None


def _restrict(fd: int, st: os.stat_result, path: Path, group: str | None) -> None:
    """Only the owner (and ``group``) may enter: an earlier run may have had another group."""
    target = f"/proc/self/fd/{fd}"  # an O_PATH descriptor takes no fchmod: its /proc link does
    mode = 0o700 if group is None else 0o750
    try:
        if group is not None and st.st_gid != (gid := _gid(group, path)):
            os.chown(target, -1, gid)
        if stat.S_IMODE(st.st_mode) != mode:
            os.chmod(target, mode)
    except PermissionError as exc:
        raise DeskError(
            f"trading desk {path}: cannot give it to group {group} ({exc.strerror}); the "
            "service user must be a member of it"
        ) from None


def _listen(path: Path, group: str | None) -> tuple[socket.socket, int, int]:
    """A listening socket in the desk's directory, the directory's descriptor and the
    socket file's inode (to remove only our own at the end)."""
    fd = prepare(path, group)
    try:
        try:
            st = os.stat(SOCKET, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            # Only we (or root) can make a name in this directory, and only one execution
            # of an instance runs at a time: a socket of ours is a dead predecessor's.
            if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid():
                raise DeskTaken(
                    f"trading desk {path / SOCKET} exists and is not our socket "
                    f"({_describe(st)}): remove it"
                )
            os.unlink(SOCKET, dir_fd=fd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.bind(f"/proc/self/fd/{fd}/{SOCKET}")
            os.chmod(SOCKET, 0o600 if group is None else 0o660, dir_fd=fd)
            if group is not None:
                os.chown(SOCKET, -1, _gid(group, path), dir_fd=fd)
            sock.listen(8)
            inode = os.stat(SOCKET, dir_fd=fd, follow_symlinks=False).st_ino
        except OSError as exc:
            sock.close()
            raise DeskError(f"trading desk {path / SOCKET}: cannot listen ({exc})") from None
    except BaseException:
        os.close(fd)
        raise
    return sock, fd, inode


@dataclass
class Request:
    """One operator's request, with the kernel's word on who sent it."""

    state: str
    reason: str
    pid: int
    uid: int
    _conn: socket.socket = field(repr=False)

    @property
    def user(self) -> str:
        return user_name(self.uid)

    def answer(self, reply: dict[str, Any]) -> None:
        try:
            self._conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError as exc:  # the client gave up: the change stands, journaled
            log.warning("could not answer the operator (pid %d): %s", self.pid, exc)
        finally:
            self._conn.close()


class TradingDesk:
    """The listening side, polled by the execution loop (never blocks it for long)."""

    def __init__(self, path: Path, operator_group: str | None = None) -> None:
        self.path = Path(path)
        self._group = operator_group
        self._sock: socket.socket | None = None
        self._dir = -1
        self._inode = 0
        self._retry_at = 0.0
        self._failed: str | None = None  # the last reason it could not open, said once
        self._open()

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def _open(self) -> None:
        try:
            self._sock, self._dir, self._inode = _listen(self.path, self._group)
        except DeskError as exc:
            # Not the end of execution: trading goes on under its risk checks, and the
            # operator's line opens as soon as the cause is gone.
            self._retry_at = time.monotonic() + RETRY_S
            if str(exc) != self._failed:
                log.error(
                    "trading desk closed: %s; `dynamind trading` and `flatten` cannot reach "
                    "execution meanwhile (trying again every %gs)", exc, RETRY_S,
                )  # fmt: skip
            self._failed = str(exc)
            return
        if self._failed is not None:
            log.info("trading desk open at %s", self.path / SOCKET)
            self._failed = None

    def allowed(self, uid: int) -> bool:
        if uid in (0, os.getuid()):
            return True
        if self._group is None:
            return False
        try:
            g = grp.getgrnam(self._group)
            user = pwd.getpwuid(uid)
        except KeyError:
            return False
        return user.pw_gid == g.gr_gid or user.pw_name in g.gr_mem

    def requests(self) -> list[Request]:
        """The requests waiting now (each to be answered)."""
        if self._sock is None:
            if time.monotonic() < self._retry_at:
                return []
            self._open()
            if self._sock is None:
                return []
        out = []
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return out
            pid, uid, _ = _peer(conn)
            req = self._read(conn, pid, uid)
            if req is not None:
                out.append(req)

    def _read(self, conn: socket.socket, pid: int, uid: int) -> Request | None:
        bad = Request("", "", pid, uid, conn)
        if not self.allowed(uid):
            log.warning("refused a trading state request from %s (pid %d)", user_name(uid), pid)
            bad.answer({"ok": False, "error": f"{user_name(uid)} may not change the trading state"})
            return None
        conn.setblocking(True)
        conn.settimeout(READ_TIMEOUT_S)
        data = b""
        try:
            while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                chunk = conn.recv(MAX_REQUEST)
                if not chunk:
                    break
                data += chunk
            msg = json.loads(data)
            return Request(str(msg["state"]), str(msg.get("reason", "")), pid, uid, conn)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            bad.answer({"ok": False, "error": f"bad request: {exc}"})
            return None

    def close(self) -> None:
        if self._sock is None:
            return
        self._sock.close()
        self._sock = None
        try:  # our socket file only: never a successor's
            if os.stat(SOCKET, dir_fd=self._dir, follow_symlinks=False).st_ino == self._inode:
                os.unlink(SOCKET, dir_fd=self._dir)
        except FileNotFoundError:
            pass
        finally:
            os.close(self._dir)


def _connect(path: Path, timeout: float) -> socket.socket:
    """A socket connected to the desk at ``path``, once the directory and the process
    listening are found to be the appliance's. NotListening, NotPermitted or DeskError
    else."""
    where = path / SOCKET
    try:
        fd, st, parent = _open_desk(path)
    except (FileNotFoundError, NotADirectoryError):
        raise NotListening(f"no execution process answers at {where} (no such desk)") from None
    except PermissionError as exc:
        raise NotPermitted(f"{_who(os.getuid())} may not reach the trading desk {where} "
                           f"({exc.strerror})") from None  # fmt: skip
    try:
        owner = st.st_uid
        if problem := _problem(path, st, parent, owner):
            raise problem
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            s.connect(f"/proc/self/fd/{fd}/{SOCKET}")
            pid, uid, _ = _peer(s)
            if uid not in (owner, 0):
                raise DeskTaken(
                    f"trading desk {where} is answered by {_who(uid)} (pid {pid}), not by "
                    f"{_who(owner)} who owns {path}: not this appliance's execution; "
                    "nothing was sent"
                )
        except (ConnectionRefusedError, FileNotFoundError):
            s.close()
            raise NotListening(f"no execution process answers at {where}") from None
        except PermissionError as exc:
            s.close()
            raise NotPermitted(f"{_who(os.getuid())} may not reach the trading desk {where} "
                               f"({exc.strerror})") from None  # fmt: skip
        except BaseException:
            s.close()
            raise
    finally:
        os.close(fd)
    return s


def request(path: Path, state: str, reason: str, timeout: float) -> dict[str, Any]:
    """Ask the execution process listening at the desk ``path`` for ``state``; its answer.

    Raises NotListening (no one answers), NotPermitted (this user may not reach it),
    DeskError (the desk or the process answering is not the appliance's: nothing sent).
    """
    path = Path(path).absolute()  # every message names the directory it looked in
    s = _connect(path, timeout)
    with s:
        # Refused before it read (a stranger): its answer is still there to read.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(json.dumps({"state": state, "reason": reason}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = s.recv(MAX_REQUEST)
            except ConnectionResetError:  # it closed with our request unread
                break
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotListening(f"the execution process at {path / SOCKET} hung up without an answer")
    return json.loads(data)

"""The operator's line to the execution process: trading state changes from the CLI.

`dynamind trading halt|reduce-only|resume` and `dynamind flatten` (state ``FLATTEN``)
connect to a Unix stream socket in the abstract namespace named after the instance, send
one JSON line ``{"state", "reason"}`` and read one JSON line back: the outcome, after
execution has journaled the change and cancelled (or sent) what it had to. The execution
process listens and answers between batches.

Who asked is what the kernel says of the connecting process (SO_PEERCRED: pid, uid), not
a name the client claims: that is what the journal records. The appliance's own user,
root and members of ``operator_group`` may change the trading state; anyone else is
refused before a byte is read. An abstract socket needs no file and vanishes with its
process, so a restarted execution process binds it again at once (it lives in the network
namespace: the CLI must run in the appliance's, which systemd's unit does not change).

Unlike a signal, the request carries what and why, and the operator gets an answer, or
a clear error when execution is not there to answer.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.5
FLATTEN = "flatten"  # not a trading state: reduce-only, then close every position
MAX_REQUEST = 4096
_UCRED = struct.Struct("3i")  # pid, uid, gid


def address(instance: str) -> str:
    return f"\0dynamind/{instance}/trading"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


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

    def __init__(self, instance: str, operator_group: str | None = None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self._sock.bind(address(instance))
        self._sock.listen(8)
        self._group = operator_group

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
        out = []
        while True:
            try:
                conn, _ = self._sock.accept()
            except BlockingIOError:
                return out
            pid, uid, _ = _UCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            )
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
        self._sock.close()


class NotListening(RuntimeError):
    """No execution process answers for the instance (not running, or restarting)."""


def request(instance: str, state: str, reason: str, timeout: float) -> dict[str, Any]:
    """Ask the execution process of ``instance`` for ``state``; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(address(instance))
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise NotListening(f"no execution process of {instance!r} answers") from exc
        s.sendall(json.dumps({"state": state, "reason": reason}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(MAX_REQUEST)
            if not chunk:
                break
            data += chunk
    if not data:
        raise NotListening(f"the execution process of {instance!r} hung up without an answer")
    return json.loads(data)

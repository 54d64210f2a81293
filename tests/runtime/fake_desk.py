"""A fake trading desk run by another local user: what a squatter would put up.

The tests run as root; a forked child drops to another uid and gid (no supplementary
groups, as in tests/shm/users.py) and answers every connection with the reply a real
desk gives to a halt, naming itself, so a client that took it for execution would say so.
What it was sent comes back to the test (``heard``): a careful client sends nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
from pathlib import Path

SOCKET = "trading"  # the socket's name in the desk's directory: a squatter knows it too


def fake_reply(uid: int) -> dict:
    return {"ok": True, "state": "halted", "was": "active", "why": f"fake answer from uid {uid}"}


class FakeDesk:
    """A process of ``uid``/``gid`` serving fake answers at ``path``/trading.

    ``make_dir``: it makes the directory itself (0700, as that user) first. ``bound``: a
    socket someone else bound, which the child only listens on (the listener's identity,
    SO_PEERCRED, is the one that calls listen()). ``abstract``: an abstract name instead,
    where the desk used to be.
    """

    def __init__(
        self,
        uid: int,
        gid: int,
        path: Path | None = None,
        *,
        make_dir: bool = True,
        bound: socket.socket | None = None,
        abstract: str | None = None,
    ) -> None:
        ready_r, ready_w = os.pipe()
        heard_r, heard_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            os.close(ready_r)
            os.close(heard_r)
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                sock = bound or socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                if abstract is not None:
                    sock.bind(abstract)
                elif bound is None:
                    assert path is not None
                    if make_dir:
                        os.mkdir(path, 0o700)
                    fd = os.open(path, os.O_PATH | os.O_DIRECTORY)
                    sock.bind(f"/proc/self/fd/{fd}/{SOCKET}")
                sock.listen(8)
                os.write(ready_w, b"listening")
                os.close(ready_w)
                reply = json.dumps(fake_reply(uid)).encode() + b"\n"
                while True:
                    conn, _ = sock.accept()
                    conn.settimeout(2.0)
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        data = b""
                    if data:
                        os.write(heard_w, data.rstrip(b"\n") + b"\n")
                    with contextlib.suppress(OSError):
                        conn.sendall(reply)
                    conn.close()
            except BaseException as exc:  # reported, not raised: this is a forked child
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
            finally:
                os._exit(0)
        os.close(ready_w)
        os.close(heard_w)
        self._heard = heard_r
        self.heard: list[bytes] = []
        with os.fdopen(ready_r, "rb") as f:
            said = f.read().decode()
        if said != "listening":
            self.stop()
            raise AssertionError(f"the fake desk did not start: {said}")

    def stop(self) -> list[bytes]:
        """End the child; what it heard, one request a line."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = 0
            with os.fdopen(self._heard, "rb") as f:
                self.heard = f.read().splitlines()
        return self.heard

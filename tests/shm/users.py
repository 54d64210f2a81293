"""Run a function as another local user, the way a hostile or an operator account would.

The tests run as root, so a forked child drops to another uid and gid (with no
supplementary groups) before calling the function. Forked, not spawned: the function is
a closure of the test, and a child that only makes a few calls and then ``_exit``s does
not run into what forking a threaded parent can break. Its result (or its exception, as
text) comes back through a pipe.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import pytest

NOBODY = 65534  # uid and gid of nobody/nogroup
STRANGER = 65533  # another uid that is neither root nor in any group of ours


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the test acts as other users (setuid)")


class AsUser:
    """``fn()`` in a forked child running as ``uid``/``gid``; :meth:`result` waits for it."""

    def __init__(self, fn: Callable[[], Any], uid: int, gid: int) -> None:
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            os.close(r)
            try:
                os.setgroups([])
                os.setgid(gid)
                os.setuid(uid)
                out: tuple[str, Any] = ("ok", fn())
            except BaseException as exc:  # reported, not raised: this is a forked child
                out = ("error", f"{type(exc).__name__}: {exc}")
            os.write(w, pickle.dumps(out))
            os._exit(0)
        os.close(w)
        self._r = r

    def result(self) -> tuple[str, Any]:
        """("ok", what fn returned) or ("error", "ExceptionType: message")."""
        with os.fdopen(self._r, "rb") as f:
            data = f.read()
        os.waitpid(self.pid, 0)
        return pickle.loads(data)


def as_user(fn: Callable[[], Any], uid: int, gid: int) -> tuple[str, Any]:
    return AsUser(fn, uid, gid).result()

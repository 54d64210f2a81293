"""Fixtures for the shm tests: a unique instance per test, spawned children, reports.

Every test gets its own instance name; after the test nothing of that instance may be
left in /dev/shm (tests that kill an owner call ``remove_instance`` themselves). Children
are started with the spawn context only: segments are guarded by OFD locks, which a forked
child would share with its parent.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from appliance.shm import list_names, remove_instance
from tests.shm.procs import Reporter


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"t{os.getpid()}x{uuid.uuid4().hex[:6]}"
    yield name
    left = list_names(name)
    if left:
        remove_instance(name)  # do not pollute /dev/shm, but fail the test
    assert left == [], f"the test left shared memory behind: {left}"


class Procs:
    """Spawned children, each reporting on its own pipe; the fixture kills leftovers."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.started: list[Any] = []
        self._conns: dict[Any, str] = {}  # receiving end -> tag
        self._stash: list[tuple[str, str, Any]] = []
        self._keep: list[Any] = []

    def start(self, target: Callable[..., None], tag: str, *args: Any) -> Any:
        recv, send = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(
            target=target, args=(Reporter(send), tag, *args), name=tag, daemon=True
        )
        p.start()
        send.close()  # the child has its copy: EOF here once the child is gone
        self.started.append(p)
        self._conns[recv] = tag
        return p

    def event(self) -> Any:
        """A spawn-context Event, kept alive for the whole test (a child that unpickles
        one after the parent dropped it would find its semaphore gone)."""
        ev = self.ctx.Event()
        self._keep.append(ev)
        return ev

    def barrier(self, parties: int) -> Any:
        """A spawn-context Barrier, kept alive for the whole test (see :meth:`event`)."""
        b = self.ctx.Barrier(parties)
        self._keep.append(b)
        return b

    def expect(self, kind: str, tag: str | None = None, timeout: float = 60.0) -> Any:
        """The payload of the next report of ``kind`` (from ``tag``); a child error raises."""
        for item in self._stash:
            if item[0] == kind and (tag is None or item[1] == tag):
                self._stash.remove(item)
                return item[2]
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._conns:
                raise AssertionError(f"no {kind!r} report from {tag or 'any child'}")
            for conn in mp_connection.wait(list(self._conns), timeout=left):
                try:
                    item = conn.recv()
                except EOFError:  # that child is gone
                    del self._conns[conn]
                    conn.close()
                    continue
                if item[0] == "error":
                    raise AssertionError(f"child {item[1]} failed:\n{item[2]}")
                self._stash.append(item)
            for item in self._stash:
                if item[0] == kind and (tag is None or item[1] == tag):
                    self._stash.remove(item)
                    return item[2]

    def collect(self, kind: str, tags: list[str], timeout: float = 90.0) -> dict[str, Any]:
        """One ``kind`` report from each of ``tags``, by tag."""
        deadline = time.monotonic() + timeout
        return {t: self.expect(kind, t, max(0.1, deadline - time.monotonic())) for t in tags}

    @staticmethod
    def kill(p: Any) -> None:
        """SIGKILL a child and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.join(30)

    def kill_after(self, p: Any, delay: float) -> None:
        time.sleep(delay)
        self.kill(p)

    def join(self, p: Any, timeout: float = 60.0) -> int:
        p.join(timeout)
        assert p.exitcode is not None, f"child {p.name} still running after {timeout} s"
        return p.exitcode

    def shutdown(self) -> None:
        for p in self.started:
            if p.is_alive():
                self.kill(p)
        for conn in self._conns:
            conn.close()


@pytest.fixture
def procs(instance: str) -> Iterator[Procs]:
    # depends on `instance` so that children are killed before the leftover check
    p = Procs()
    yield p
    p.shutdown()

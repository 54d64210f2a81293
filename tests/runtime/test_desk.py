"""The trading desk: requests carry the kernel's word on who sent them; strangers are
refused before anything is read."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from appliance.runtime.desk import NotListening, TradingDesk, address, request
from tests.shm.users import NOBODY, AsUser, require_root


@pytest.fixture
def desk():
    instance = f"desk{uuid.uuid4().hex[:8]}"
    d = TradingDesk(instance)
    d.instance = instance
    yield d
    d.close()


def serve(desk, answer, stop):
    """Answer every request with ``answer(req)`` until ``stop`` is set."""
    while not stop.is_set():
        for req in desk.requests():
            req.answer(answer(req))
        time.sleep(0.01)


def test_request_and_answer_name_the_caller(desk):
    seen = []
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(desk, lambda r: seen.append(r) or {"ok": True}, stop))
    t.start()
    try:
        assert request(desk.instance, "halted", "why not", 5.0) == {"ok": True}
    finally:
        stop.set()
        t.join()
    [req] = seen
    assert (req.state, req.reason, req.uid, req.pid) == (
        "halted",
        "why not",
        os.getuid(),
        os.getpid(),
    )


def test_strangers_are_refused(desk):
    require_root()
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(desk, lambda r: {"ok": True}, stop))
    t.start()
    try:
        got = AsUser(lambda: request(desk.instance, "active", "", 5.0), NOBODY, NOBODY).result()
    finally:
        stop.set()
        t.join()
    assert got == ("ok", {"ok": False, "error": "nobody may not change the trading state"})


def test_a_garbled_request_gets_an_error(desk):
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(desk, lambda r: {"ok": True}, stop))
    t.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(address(desk.instance))
            s.sendall(b"not json\n")
            reply = s.recv(4096)
    finally:
        stop.set()
        t.join()
    assert b'"ok": false' in reply and b"bad request" in reply


def test_nobody_listening():
    with pytest.raises(NotListening, match="no execution process"):
        request(f"none{uuid.uuid4().hex[:8]}", "halted", "", 1.0)

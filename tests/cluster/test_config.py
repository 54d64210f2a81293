"""The [cluster] table: checks, which processes an instance runs, and the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.runtime import layout
from tests.harness import write_config

ROOT = Path(__file__).resolve().parents[2]


def cluster_config(tmp_path, cluster: str, **overrides):
    path, _ = write_config(tmp_path, extra=cluster, **overrides)
    return load_config(path)


def test_an_agents_instance_runs_its_hosts_the_uplink_and_a_nats_feed(tmp_path):
    cfg = cluster_config(
        tmp_path,
        '[cluster]\nservers = ["nats://127.0.0.1:4222"]\nrole = "agents"\n'
        'hosts = ["host-b"]\nticks_from = "src"\n',
        feed_kind="nats",
    )
    names = [p.name for p in layout.processes(cfg)]
    assert names == ["host-b", "uplink", "feed"]
    assert layout.queue_hosts(cfg) == [1] and layout.drainer(cfg) == "uplink"
    assert len({p.stats_slot for p in layout.processes(cfg)}) == 3


def test_an_execution_instance_with_remote_hosts_runs_the_gateway_and_bridge(tmp_path):
    cfg = cluster_config(
        tmp_path,
        '[cluster]\nservers = ["nats://127.0.0.1:4222"]\nhosts = ["host-a"]\n'
        "publish_ticks = true\n",
    )
    names = [p.name for p in layout.processes(cfg)]
    assert names == ["execution", "host-a", "bridge", "gateway", "feed"]
    assert cfg.remote_hosts() == [1] and layout.queue_hosts(cfg) == [0, 1]
    assert layout.stats_slots(cfg) > max(p.stats_slot for p in layout.processes(cfg))


@pytest.mark.parametrize(
    ("cluster", "feed", "where", "message"),
    [
        ('servers = ["nats://x:1"]\nhosts = ["nope"]', "synthetic", "cluster.hosts[0]", "unknown"),
        ('servers = ["nats://x:1"]\nrole = "agents"', "synthetic", "cluster", "needs the hosts"),
        ('servers = ["nats://x:1"]', "nats", "cluster.ticks_from", "instance to mirror"),
        ('servers = ["http://x"]', "synthetic", "cluster.servers[0]", "should match"),
        ('servers = ["nats://x:1"]\ncredentials = "/no/such.creds"', "synthetic",
         "cluster.credentials", "does not exist"),
    ],
)  # fmt: skip
def test_bad_cluster_tables_name_the_problem(tmp_path, cluster, feed, where, message):
    path, _ = write_config(tmp_path, extra=f"[cluster]\n{cluster}\n", feed_kind=feed)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert any(loc == where and message in msg for loc, msg in err.value.errors), err.value


def test_a_stream_table_gives_only_what_it_changes(tmp_path):
    cfg = cluster_config(
        tmp_path,
        '[cluster]\nservers = ["nats://127.0.0.1:4222"]\n[cluster.ticks]\nreplicas = 3\n'
        "[cluster.reports]\nmax_age_s = 60.0\n",
    )
    assert (cfg.cluster.ticks.stream, cfg.cluster.ticks.replicas) == ("DYNAMIND_TICKS", 3)
    assert cfg.cluster.ticks.max_age_s == 300.0 and cfg.cluster.ticks.max_bytes == 1 << 30
    assert (cfg.cluster.reports.stream, cfg.cluster.reports.max_age_s) == ("DYNAMIND_REPORTS", 60)
    assert cfg.cluster.intents.stream == "DYNAMIND_INTENTS"


def test_the_nats_feed_needs_a_cluster(tmp_path):
    path, _ = write_config(tmp_path, feed_kind="nats")
    with pytest.raises(ConfigError, match="needs a \\[cluster\\] table"):
        load_config(path)


def test_the_example_cluster_is_one_cluster():
    exe = load_config(ROOT / "config/examples/cluster-exec.toml")
    agt = load_config(ROOT / "config/examples/cluster-agents.toml")
    assert exe.symbols == agt.symbols and exe.hosts == agt.hosts
    assert exe.instance != agt.instance and agt.cluster.ticks_from == exe.instance
    assert exe.cluster.publish_ticks and agt.feed.kind == "nats"
    assert set(exe.local_hosts()) | set(agt.local_hosts()) == set(range(len(exe.hosts)))
    assert exe.remote_hosts() == agt.local_hosts()

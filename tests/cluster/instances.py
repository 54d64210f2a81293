"""Appliance instances joined by NATS: configs for the cluster tests, built on tests.harness."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from appliance.model.records import TICK
from appliance.shm import BroadcastRing
from tests.harness import TEST_CONFIG, Appliance

TEST_READER = 15  # a ring reader slot no worker uses
# Starting an instance spawns half a dozen Python processes: slow on a busy machine.
START_S = 180.0


def instance_name(tag: str) -> str:
    return f"t{os.getpid()}x{uuid.uuid4().hex[:4]}{tag}"


def cluster_table(urls: list[str], prefix: str, **keys: Any) -> str:
    """A [cluster] table: short retention and small streams unless a test says otherwise."""
    lines = ["[cluster]", f"servers = {urls!r}".replace("'", '"'), f'subject_prefix = "{prefix}"']
    streams = {k: keys.pop(k) for k in ("ticks", "intents", "reports") if k in keys}
    for key, value in keys.items():
        lines.append(f"{key} = {_toml(value)}")
    for name in ("ticks", "intents", "reports"):
        table = {"stream": f"{prefix.upper()}_{name.upper()}", "max_age_s": 600.0}
        table["max_bytes"] = 64 << 20
        table.update(streams.get(name, {}))
        lines.append(f"[cluster.{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


# A third agent host for clusters of three instances (every instance lists it): the
# harness's host-b under another name.
_HOST_B = TEST_CONFIG[
    TEST_CONFIG.index('[[hosts]]\nname = "host-b"') : TEST_CONFIG.index("{extra}")
]
HOST_C = _HOST_B.replace('"host-b"', '"host-c"')


def make(
    tmp: Path, tag: str, urls: list[str], prefix: str, hosts_c: bool = False, **cluster: Any
) -> Appliance:
    """An instance in ``tmp/tag`` with a [cluster] table (after host-c's table when asked);
    ``feed_kind`` and ``rate`` pass through to the harness."""
    # 1,000 ticks/s by default: enough to trade on, light on a shared machine
    overrides = {"rate": cluster.pop("rate", 1000)}
    if "feed_kind" in cluster:
        overrides["feed_kind"] = cluster.pop("feed_kind")
    directory = tmp / tag
    directory.mkdir()
    name = cluster.pop("instance", None) or instance_name(tag)
    extra = (HOST_C if hosts_c else "") + cluster_table(urls, prefix, **cluster)
    # Three instances and a server on two shared cores: a worker can starve for seconds.
    overrides.setdefault("heartbeat_timeout_s", 30.0)
    return Appliance(directory, instance=name, extra=extra, **overrides)


def ring_records(app: Appliance) -> np.ndarray:
    """The newer half of what the instance's ring holds, oldest first, read without loss
    (the older half may be overwritten while it is read)."""
    ring = BroadcastRing.attach(app.instance, "ticks", TICK)
    try:
        for _ in range(5):
            start = max(0, ring.publish_cursor - ring.capacity // 2)
            reader = ring.reader("block", start=start, slot=TEST_READER)
            try:
                parts = []
                while reader.available() > 0:
                    view = reader.read(1 << 20)
                    batch = view.copy()
                    if reader.valid():
                        parts.append(batch)
                if reader.lost == 0:
                    return np.concatenate(parts) if parts else np.zeros(0, TICK)
            finally:
                reader.close()
        raise AssertionError("the ring kept lapping the test's reader")
    finally:
        ring.close()

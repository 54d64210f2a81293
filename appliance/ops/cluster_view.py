"""The cluster part of `dynamind status` and `dynamind top`: what crosses NATS, how fast,
how far behind and what was lost, per cluster process of this instance.

- bridge: ticks published per second, its ring reader's lag (ticks not yet published),
  ticks it lost to a lapped read, and the stream sequence it last stored;
- nats feed: ticks mirrored per second, stream messages still to read (lag), GAP records
  and the ticks they stand for, and the hop's p99 (source ring write to this ring);
- gateway / uplink: intents and reports per second, stream messages still to read.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config import Config
from appliance.model.enums import Role
from appliance.ops.monitor import Sample
from appliance.runtime import layout


@dataclass(frozen=True)
class ClusterRow:
    name: str
    what: str  # "ticks" or "intents/reports"
    per_s: str
    total: str
    lag: str
    gaps: str
    p99_us: str


def cluster_rows(sample: Sample, config: Config) -> list[ClusterRow]:
    if config.cluster is None:
        return []
    lag = {r["slot"]: r["lag"] for r in sample.readers}
    rows = []
    for p in sample.processes:
        c, r = p.counters, p.rates
        p99 = "-" if p.p99_us != p.p99_us else f"{p.p99_us:,.0f}"
        if p.role == Role.BRIDGE:
            rows.append(
                ClusterRow(
                    p.name, "ticks out", f"{r['ticks_in']:,.0f}", f"{c['ticks_in']:,}",
                    f"{lag.get(layout.bridge_reader(config), 0):,} ticks",
                    f"{c['tick_gaps']:,} lapped", p99,
                )
            )  # fmt: skip
        elif p.role == Role.FEED and config.feed.kind == "nats":
            rows.append(
                ClusterRow(
                    p.name, f"ticks from {config.cluster.ticks_from}", f"{r['ticks_out']:,.0f}",
                    f"{c['ticks_out']:,}", f"{c['net_lag']:,} msgs",
                    f"{c['net_gaps']:,} ({c['tick_gaps']:,} ticks)", p99,
                )
            )  # fmt: skip
        elif p.role in (Role.GATEWAY, Role.UPLINK):
            rows.append(
                ClusterRow(
                    p.name, "intents/reports", f"{r['intents']:,.0f}/{r['reports']:,.0f}",
                    f"{c['intents']:,}/{c['reports']:,}", f"{c['net_lag']:,} msgs",
                    f"{c['errors']:,} refused", "-",
                )
            )  # fmt: skip
    return rows


COLUMNS = ("process", "stream", "per s", "total", "lag", "gaps", "p99 us")


def format_cluster(sample: Sample, config: Config) -> list[str]:
    rows = cluster_rows(sample, config)
    if not rows:
        return []
    lines = ["", f"cluster ({', '.join(config.cluster.servers)}):"]
    for row in rows:
        lines.append(
            f"  {row.name:<8} {row.what:<22} {row.per_s:>13}/s total {row.total:>15} "
            f"lag {row.lag:>12} gaps {row.gaps:>16} p99 {row.p99_us:>7} us"
        )
    return lines

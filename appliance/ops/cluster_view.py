"""The cluster part of `dynamind status` and `dynamind top`: what crosses NATS, how fast,
how far behind and what was lost, per cluster process of the instance (read from its stats
like the rest of the monitor, no config needed).

- bridge: ticks published per second, its ring reader's lag (ticks not yet published),
  ticks it lost to a lapped read;
- nats feed (a feed that has taken stream messages): ticks mirrored per second, stream
  messages still to read (lag), GAP ticks written and the ticks they stand for, and the
  hop's p99 (source ring write to this ring);
- gateway / uplink: intents and reports per second, stream messages still to read.
"""

from __future__ import annotations

from appliance.model.enums import Role
from appliance.ops.monitor import ProcessRow, Sample, p99_text

COLUMNS = ("process", "stream", "per s", "total", "lag", "gaps", "p99")


def _row(p: ProcessRow, sample: Sample) -> tuple[str, ...] | None:
    c, r = p.counters, p.rates
    if p.role == Role.BRIDGE:
        lag = next((x.lag for x in sample.readers if x.name == p.name), 0)
        return (p.name, "ticks out", f"{r['ticks_in']:,.0f}", f"{c['ticks_in']:,}",
                f"{lag:,} ticks", f"{c['tick_gaps']:,} lapped", p99_text(p))  # fmt: skip
    if p.role == Role.FEED and c["net_seq"]:
        return (p.name, "ticks in", f"{r['ticks_out']:,.0f}", f"{c['ticks_out']:,}",
                f"{c['net_lag']:,} msgs", f"{c['feed_gaps']:,} ({c['net_missing']:,} ticks)",
                p99_text(p))  # fmt: skip
    if p.role in (Role.GATEWAY, Role.UPLINK):
        return (p.name, "intents/reports", f"{r['intents']:,.0f}/{r['reports']:,.0f}",
                f"{c['intents']:,}/{c['reports']:,}", f"{c['net_lag']:,} msgs",
                f"{c['errors']:,} refused", "-")  # fmt: skip
    return None


def cluster_rows(sample: Sample) -> list[tuple[str, ...]]:
    return [row for p in sample.processes if (row := _row(p, sample)) is not None]


def format_cluster(sample: Sample) -> list[str]:
    rows = cluster_rows(sample)
    if not rows:
        return []
    lines = ["", "cluster:"]
    for name, what, per_s, total, lag, gaps, p99 in rows:
        lines.append(
            f"  {name:<8} {what:<16} {per_s:>13}/s total {total:>15} lag {lag:>12} "
            f"gaps {gaps:>16} p99 {p99:>8}"
        )
    return lines

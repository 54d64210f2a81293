"""The live trading metrics of a running appliance, as `status` and `top` show them.

Reads the METRIC snapshot the execution process publishes (runtime/live_metrics.py) and
names its rows: overall, per population, per symbol, the top and bottom agents by PnL net
of fees. Definitions of every figure: docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import Any

from appliance.config import Config
from appliance.model.records import METRIC_COUNTS, METRIC_FIGURES, MetricGroup
from appliance.runtime import live_metrics
from appliance.shm import SegmentError
from appliance.shm.snapshot import SnapshotBusy

#: Columns a person sees, in order (header, figure).
COLUMNS = (
    ("net", "net"), ("gross", "gross"), ("fees", "fees"), ("sharpe", "sharpe"),
    ("max dd", "max_drawdown"), ("fill %", "fill_rate_orders"), ("rej %", "reject_rate"),
    ("acc %", "signal_accuracy"), ("orders", "orders"),
)  # fmt: skip
_PERCENT = {"fill_rate_orders", "reject_rate", "signal_accuracy"}
_SECTIONS = {
    MetricGroup.OVERALL: "overall",
    MetricGroup.POPULATION: "populations",
    MetricGroup.SYMBOL: "symbols",
    MetricGroup.TOP_AGENT: "top",
    MetricGroup.BOTTOM_AGENT: "bottom",
}


class TradingView:
    """Attached to an instance's metrics snapshot (absent: nothing to show)."""

    def __init__(self, config: Config) -> None:
        self.layout = live_metrics.metrics_layout(config)
        try:
            self.snapshot = live_metrics.attach(config, read_only=True)
        except SegmentError:
            self.snapshot = None  # an appliance without live metrics (or another layout)

    def read(self) -> dict[str, Any] | None:
        """{section: [named rows]} plus ``published_ns``; None when nothing is published."""
        if self.snapshot is None:
            return None
        try:
            rows, tags, _ = self.snapshot.read(timeout=0.5)
        except SnapshotBusy:
            return None
        if not tags[live_metrics.TAG_PUBLISHED_NS]:
            return None
        out: dict[str, Any] = {name: [] for name in _SECTIONS.values()}
        out["published_ns"] = tags[live_metrics.TAG_PUBLISHED_NS]
        for r in rows:
            group = MetricGroup(int(r["group"]))
            if group == MetricGroup.NONE:
                continue
            row = {"name": self.name(group, int(r["index"]))}
            for k in (*METRIC_FIGURES, *METRIC_COUNTS):
                row[k] = r[k].item()
            out[_SECTIONS[group]].append(row)
        return out

    def name(self, group: MetricGroup, index: int) -> str:
        lay = self.layout
        if group == MetricGroup.OVERALL:
            return "overall"
        if group == MetricGroup.POPULATION:
            return lay.populations[index].name
        if group == MetricGroup.SYMBOL:
            return lay.symbols[index]
        pop, agent = lay.who(index)
        return f"{pop.host_name}.{pop.population}.{agent}"

    def close(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()


def cell(key: str, value: float | int) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if key in _PERCENT:
        return f"{100 * value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.2f}"


def table_rows(view: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(section label, cells) rows: overall, populations, top and bottom agents."""
    out = []
    for section, label in (("overall", ""), ("populations", "pop"), ("top", "top"),
                           ("bottom", "bottom")):  # fmt: skip
        for r in view[section]:
            name = f"{label} {r['name']}".strip()
            out.append((name, [cell(key, r[key]) for _, key in COLUMNS]))
    return out


def format_text(view: dict[str, Any] | None) -> str:
    """The trading part of `dynamind status`."""
    if view is None:
        return "trading: no metrics published yet"
    rows = table_rows(view)
    width = max(len(n) for n, _ in rows) if rows else 10
    head = f"{'trading':<{width}} " + " ".join(f"{h:>10}" for h, _ in COLUMNS)
    lines = [head]
    for name, cells in rows:
        lines.append(f"{name:<{width}} " + " ".join(f"{c:>10}" for c in cells))
    lines.append("net = realised + unrealised - fees; sharpe annualised (docs/metrics.md)")
    return "\n".join(lines)

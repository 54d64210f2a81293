"""The live trading metrics of a running appliance, as `status` and `top` show them.

Reads the METRIC snapshot the execution process publishes (runtime/live_metrics.py) and
names its rows: overall, per population, per symbol, the top and bottom agents by PnL net
of fees. Definitions of every figure: docs/metrics.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from appliance.model.records import METRIC_COUNTS, METRIC_FIGURES, MetricGroup
from appliance.runtime import live_metrics
from appliance.shm import SegmentError
from appliance.shm.snapshot import SharedSnapshot, SnapshotBusy

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
    """The metrics snapshot of a running instance (absent: an appliance without it)."""

    def __init__(self, instance: str) -> None:
        try:
            self.snapshot: SharedSnapshot | None = live_metrics.watch(instance)
        except SegmentError:
            self.snapshot = None

    def read(self, hosts: list[str]) -> dict[str, Any] | None:
        """{section: [named rows]} plus ``published_ns``; None when nothing is published.
        ``hosts`` are the agent hosts' names in config order (from the stats slots)."""
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
            row = {"name": name(group, r, hosts)}
            for k in (*METRIC_FIGURES, *METRIC_COUNTS):
                row[k] = r[k].item()
            out[_SECTIONS[group]].append(row)
        return out

    def close(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()


def name(group: MetricGroup, r: np.void, hosts: list[str]) -> str:
    """``overall``, ``host-a.0`` (a population), ``host-a.0.17`` (an agent), ``symbol 2``."""
    if group == MetricGroup.OVERALL:
        return "overall"
    if group == MetricGroup.SYMBOL:
        return f"symbol {int(r['symbol'])}"
    h = int(r["host"])
    pop = f"{hosts[h] if h < len(hosts) else f'host{h}'}.{int(r['population'])}"
    return pop if group == MetricGroup.POPULATION else f"{pop}.{int(r['agent'])}"


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
    """The metrics part of `dynamind status`."""
    if view is None:
        return "metrics: none published yet"
    rows = table_rows(view)
    width = max(len(n) for n, _ in rows) if rows else 10
    head = f"{'metrics':<{width}} " + " ".join(f"{h:>10}" for h, _ in COLUMNS)
    lines = [head]
    for name, cells in rows:
        lines.append(f"{name:<{width}} " + " ".join(f"{c:>10}" for c in cells))
    lines.append("net = realised + unrealised - fees; sharpe annualised (docs/metrics.md)")
    return "\n".join(lines)

"""A backtest's report: summary.json, PNG plots (matplotlib, headless) and an HTML page.

Every figure in the report is the trading metrics' (docs/metrics.md), computed while the
backtest ran; the summary also says which data, config and seeds produced them, so a
report can be reproduced.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: no display is ever needed

import itertools

import matplotlib.pyplot as plt
import numpy as np
import orjson

from appliance.ops.journal_views import figure_rows, iso
from appliance.storage.private import open_private
from appliance.workers.lockstep import BacktestResult

TOP = 5
DPI = 100
#: Plot name -> (file, figure size in inches at DPI).
PLOTS = {
    "equity": ("equity.png", (10.0, 6.0)),
    "populations": ("pnl_by_population.png", (10.0, 5.0)),
    "sharpe": ("sharpe_distribution.png", (8.0, 5.0)),
    "heatmap": ("parameter_heatmap.png", (8.0, 6.0)),
}
SUMMARY_FIGURES = ("net", "gross", "fees", "realized", "unrealized", "turnover", "sharpe",
                   "sortino", "max_drawdown", "drawdown_s", "orders", "orders_filled",
                   "fill_rate_orders", "fill_rate_qty", "rejects", "reject_rate",
                   "signal_accuracy")  # fmt: skip


def _agent_rows(r: BacktestResult) -> list[dict]:
    """Every agent's figures, with its symbol and drawn parameters."""
    rows = figure_rows(r.metrics, "agent")
    names = r.config.symbol_names
    i = 0
    for pops in r.populations:
        for pop in pops:
            params = {k: np.asarray(v).tolist() for k, v in pop.table.items()}
            for a in range(pop.n_agents):
                rows[i]["symbol"] = names[int(pop.agent_symbol[a])]
                rows[i]["params"] = {k: v[a] for k, v in params.items()}
                i += 1
    return rows


def summary(r: BacktestResult) -> dict[str, Any]:
    cfg = r.config
    agents = _agent_rows(r)
    traded = sorted((a for a in agents if a["orders"]), key=lambda a: a["net"], reverse=True)
    pops = figure_rows(r.metrics, "population")
    for row, info in zip(pops, r.metrics.agents.populations, strict=True):
        conf = cfg.hosts[info.host].populations[info.population]
        row.update(kind=conf.kind, agents=conf.agents, params=conf.params,
                   seed=cfg.population_seed(info.host, info.population))  # fmt: skip
    return {
        "data": str(r.data),
        "from": iso(r.first_ns),
        "to": iso(r.last_ns),
        "ticks": r.ticks,
        "dropped": r.dropped,  # records with prices or sizes no market prints, by reason
        "intents": r.intents,
        "wall_s": round(r.wall_s, 3),
        "ticks_per_s": round(r.ticks_per_s, 1),
        "sample_interval_s": cfg.metrics.sample_interval_s,
        "feed_seed": cfg.feed.seed,
        "fees_bps": {"taker": cfg.execution.taker_fee_bps, "maker": cfg.execution.maker_fee_bps},
        "journal": r.journal.name,
        "overall": figure_rows(r.metrics, "overall")[0],
        "populations": pops,
        "symbols": figure_rows(r.metrics, "symbol"),
        "agents_traded": len(traded),
        "best_agents": traded[:TOP],
        "worst_agents": traded[::-1][:TOP],
        "plots": {k: f for k, (f, _) in PLOTS.items()},
    }


# ---- plots ---------------------------------------------------------------------------------


def _figure(name: str) -> tuple[plt.Figure, str]:
    file, size = PLOTS[name]
    return plt.figure(figsize=size, dpi=DPI), file


def _save(fig: plt.Figure, out: Path, file: str) -> Path:
    path = out / file
    with open_private(path) as f:
        fig.savefig(f, dpi=DPI, format="png")
    plt.close(fig)
    return path


def _curve(r: BacktestResult, by: str) -> tuple[np.ndarray, np.ndarray]:
    hist = r.metrics.curves[by].history or []
    t = np.array([(ns - r.first_ns) / 1e9 for ns, _ in hist])
    v = np.array([e for _, e in hist]).reshape(len(hist), -1)
    return t, v


def plot_equity(r: BacktestResult, out: Path) -> Path:
    fig, file = _figure("equity")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    t, v = _curve(r, "overall")
    eq = v[:, 0] if len(v) else np.zeros(0)
    top.plot(t, eq, color="tab:blue", label="net PnL (after fees)")
    top.axhline(0, color="grey", lw=0.5)
    top.set_ylabel("quote currency")
    top.set_title(f"Equity, sampled every {r.config.metrics.sample_interval_s:g} s")
    top.legend(loc="best")
    dd = np.maximum.accumulate(np.maximum(eq, 0)) - eq if len(eq) else eq
    bottom.fill_between(t, -dd, 0, color="tab:red", alpha=0.5, step="post")
    bottom.set_ylabel("drawdown")
    bottom.set_xlabel("seconds since the first tick")
    fig.tight_layout()
    return _save(fig, out, file)


def plot_populations(r: BacktestResult, out: Path) -> Path:
    fig, file = _figure("populations")
    ax = fig.subplots()
    t, v = _curve(r, "population")
    for i, info in enumerate(r.metrics.agents.populations):
        ax.plot(t, v[:, i] if len(v) else [], label=info.name)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_title("Net PnL per population")
    ax.set_xlabel("seconds since the first tick")
    ax.set_ylabel("quote currency")
    ax.legend(loc="best")
    fig.tight_layout()
    return _save(fig, out, file)


def plot_sharpe(r: BacktestResult, out: Path) -> Path:
    fig, file = _figure("sharpe")
    ax = fig.subplots()
    sharpe = r.metrics.figures("agent")["sharpe"]
    finite = sharpe[np.isfinite(sharpe)]
    if len(finite):
        ax.hist(finite, bins=min(40, max(5, len(finite) // 5)), color="tab:green")
    else:
        ax.text(0.5, 0.5, "no agent has a Sharpe ratio (none traded twice)", ha="center")
    ax.set_title(f"Agent Sharpe ratios (annualised; {len(finite)} of {len(sharpe)} agents)")
    ax.set_xlabel("Sharpe ratio")
    ax.set_ylabel("agents")
    fig.tight_layout()
    return _save(fig, out, file)


def _axis(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Cell index per agent and the cell labels: one cell per value, or 10 bins."""
    uniq = np.unique(values)
    if len(uniq) <= 25:
        return np.searchsorted(uniq, values), [f"{u:g}" for u in uniq]
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
    idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
    return idx, [f"{lo:g}-{hi:g}" for lo, hi in itertools.pairwise(edges)]


def plot_heatmap(r: BacktestResult, out: Path) -> Path:
    fig, file = _figure("heatmap")
    ax = fig.subplots()
    figures = r.metrics.figures("agent")
    offsets = r.metrics.agents.offsets
    chosen = None
    for i, info in enumerate(r.metrics.agents.populations):
        params = r.populations[info.host][info.population].table
        if len(params) >= 2:
            chosen = (i, info, params)
            break
    if chosen is None:
        ax.text(0.5, 0.5, "no population has two parameters to map", ha="center")
        return _save(fig, out, file)
    i, info, params = chosen
    (xname, xs), (yname, ys) = list(params.items())[:2]
    rows = slice(offsets[i], offsets[i + 1])
    value, what = figures["sharpe"][rows], "mean Sharpe ratio"
    if not np.isfinite(value).any():
        value, what = figures["net"][rows], "mean net PnL"
    xi, xl = _axis(np.asarray(xs, float))
    yi, yl = _axis(np.asarray(ys, float))
    total = np.zeros((len(yl), len(xl)))
    count = np.zeros_like(total)
    ok = np.isfinite(value)
    np.add.at(total, (yi[ok], xi[ok]), value[ok])
    np.add.at(count, (yi[ok], xi[ok]), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(count > 0, total / count, np.nan)
    lim = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
    im = ax.imshow(grid, origin="lower", aspect="auto", cmap="RdYlGn", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(xl)), xl, rotation=45 if len(xl) > 8 else 0)
    ax.set_yticks(range(len(yl)), yl)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    ax.set_title(f"{info.name}: {what} by {xname} and {yname}")
    fig.colorbar(im, ax=ax, label=what)
    fig.tight_layout()
    return _save(fig, out, file)


# ---- the page --------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fmt(x)}" for k, x in v.items())
    return str(v)


def _table(rows: list[dict], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def page(s: dict[str, Any]) -> str:
    cols = ["net", "gross", "fees", "turnover", "sharpe", "sortino", "max_drawdown",
            "fill_rate_orders", "reject_rate", "signal_accuracy"]  # fmt: skip
    agent_cols = ["host", "population", "agent", "symbol", "params", *cols[:5]]
    imgs = "".join(
        f'<figure><img src="{html.escape(f)}" alt="{html.escape(k)}"></figure>'
        for k, f in s["plots"].items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>dynamind backtest</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}img{{max-width:100%}}</style>
</head><body>
<h1>Backtest</h1>
<p>{html.escape(s["data"])}: {s["from"]} to {s["to"]}, {s["ticks"]:,} ticks, {s["intents"]:,}
intents, {s["ticks_per_s"]:,.0f} ticks/s. Figures are net of fees (taker
{s["fees_bps"]["taker"]:g} bps, maker {s["fees_bps"]["maker"]:g} bps); Sharpe and Sortino are
annualised from the equity curve sampled every {s["sample_interval_s"]:g} s
(definitions: docs/metrics.md).</p>
<h2>Overall</h2>{_table([s["overall"]], cols)}
<h2>Populations</h2>{_table(s["populations"], ["population", "agents", *cols])}
<h2>Best agents</h2>{_table(s["best_agents"], agent_cols)}
<h2>Worst agents</h2>{_table(s["worst_agents"], agent_cols)}
<h2>Plots</h2>{imgs}
</body></html>
"""


def write_report(r: BacktestResult) -> Path:
    """summary.json, the PNGs and index.html in the run's folder; the page's path."""
    out = r.out
    for plot in (plot_equity, plot_populations, plot_sharpe, plot_heatmap):
        plot(r, out)
    s = summary(r)
    with open_private(out / "summary.json") as f:
        f.write(orjson.dumps(s, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    with open_private(out / "index.html", "w") as f:
        f.write(page(s))
    return out / "index.html"

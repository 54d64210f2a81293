"""Trading metrics: one definition, computed incrementally, live and in backtests.

``TradingMetrics`` is fed what the execution side sees, in the order it sees it: ticks
(marks, the sample clock, signal scoring), intents (orders sent, signals) and reports
(fills, rejects, final answers). It keeps running state only (a ledger row per agent and
symbol, counters, the running statistics of equity curves, pending signals), so each
update costs what changed, never a replay of history; ``state``/``load`` checkpoint it.
``figures(by)`` gives the metrics per agent, population, symbol or overall.

The clock is the ticks' ``recv_ns`` (when the tick entered the appliance): the wall clock
live, the recorded clock in a backtest, so both give the same figures on the same data.
Every figure is defined, with its formula, in docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from appliance.model.orders import TERMINAL, OrderState
from appliance.model.records import OrderType, RejectReason, ReportKind
from appliance.model.universe import Universe
from appliance.trading.archive import is_carry
from appliance.trading.curves import CurveStats, Sampler
from appliance.trading.portfolio import Position
from appliance.trading.signals import SignalBook

GROUPINGS = ("agent", "population", "symbol", "overall")
#: The reasons a reject may give (REQUESTED only ends a cancelled order).
REASONS: tuple[RejectReason, ...] = tuple(
    r for r in RejectReason if r not in (RejectReason.NONE, RejectReason.REQUESTED)
)
# Ledger and counter columns of a row (one agent in one symbol), summed over groups.
_SUMS = ("realized", "fees", "turnover", "orders", "orders_filled", "requested_notional",
         "filled_notional", "signals_correct", "signals_wrong", "signals_flat")  # fmt: skip


_COUNTS = ("orders", "orders_filled", "signals_correct", "signals_wrong", "signals_flat", "rejects")


class _Rows:
    """One ledger row per (agent, symbol) seen, with growable numeric columns."""

    def __init__(self) -> None:
        self.index: dict[tuple[int, int], int] = {}
        self.positions: list[Position] = []
        self.n = 0
        self.cols: dict[str, np.ndarray] = {}
        for name in ("agent", "symbol", *_SUMS):
            self.cols[name] = np.zeros(16)
        self.rejects = np.zeros((16, len(REASONS)), np.int64)

    def rows(self, agent: np.ndarray, symbol: np.ndarray, lots: np.ndarray) -> np.ndarray:
        out = np.empty(len(agent), np.int64)
        for i, key in enumerate(zip(agent.tolist(), symbol.tolist(), strict=True)):
            r = self.index.get(key)
            if r is None:
                r = self.index[key] = self._add(*key, float(lots[key[1]]))
            out[i] = r
        return out

    def _add(self, agent: int, symbol: int, lot: float) -> int:
        r = self.n
        if r == len(self.cols["agent"]):
            for name, col in self.cols.items():
                self.cols[name] = np.concatenate([col, np.zeros_like(col)])
            self.rejects = np.concatenate([self.rejects, np.zeros_like(self.rejects)])
        self.cols["agent"][r], self.cols["symbol"][r] = agent, symbol
        self.positions.append(Position(lot))
        self.n += 1
        return r

    def col(self, name: str) -> np.ndarray:
        return self.cols[name][: self.n]

    def qty_avg(self) -> tuple[np.ndarray, np.ndarray]:
        qty = np.array([p.lots * p.lot for p in self.positions])
        avg = np.array([p.avg_price for p in self.positions])
        return qty, avg

    def state(self) -> dict[str, np.ndarray]:
        """The rows as arrays (``load``)."""
        out = {f"rows.{k}": self.col(k) for k in self.cols}
        out["rows.rejects"] = self.rejects[: self.n]
        out["rows.lots"] = np.array([p.lots for p in self.positions], np.int64)
        out["rows.lot"] = np.array([p.lot for p in self.positions])
        out["rows.avg"] = self.qty_avg()[1]
        return out

    def load(self, s: Mapping[str, np.ndarray], lots: np.ndarray) -> None:
        """Rows of ``state`` into this empty ledger."""
        self.rows(s["rows.agent"].astype(np.int64), s["rows.symbol"].astype(np.int64), lots)
        for k in self.cols:
            self.cols[k][: self.n] = s[f"rows.{k}"]
        self.rejects[: self.n] = s["rows.rejects"]
        for p, lots_, lot, avg, realized, fees in zip(
            self.positions, s["rows.lots"].tolist(), s["rows.lot"].tolist(),
            s["rows.avg"].tolist(), s["rows.realized"].tolist(), s["rows.fees"].tolist(),
            strict=True,
        ):  # fmt: skip
            p.lots, p.lot, p.avg_price, p.realized, p.fees = lots_, lot, avg, realized, fees


class TradingMetrics:
    """Incremental metrics of one appliance (see the module docstring)."""

    def __init__(
        self, universe: Universe, sample_interval_s: float = 1.0, keep_history: bool = False
    ) -> None:
        if universe.agents is None:
            raise ValueError("metrics need the universe's agent layout")
        self.universe = universe
        self.agents = layout = universe.agents
        self.sampler = Sampler(sample_interval_s)
        self.clock_ns = 0
        self.marks = np.full(len(universe.symbols), math.nan)
        self.rows = _Rows()
        self.signals = SignalBook()
        sizes = {"agent": layout.n_agents, "population": len(layout.populations),
                 "symbol": len(universe.symbols), "overall": 1}  # fmt: skip
        self.curves = {
            g: CurveStats(n, keep_history=keep_history and g != "agent") for g, n in sizes.items()
        }
        self._open: dict[tuple[int, int], list] = {}  # (host, intent seq) -> [row, ref, filled]
        self._seq: dict[int, int] = {}  # per host, the highest intent seq counted
        self.ignored = 0  # records naming an agent or symbol outside the layout

    # ---- market data ----------------------------------------------------------------------

    def on_ticks(self, ticks: np.ndarray) -> None:
        """Marks, equity samples at every boundary the ticks cross, signal scoring."""
        if not len(ticks):
            return
        times = np.maximum.accumulate(ticks["recv_ns"].astype(np.int64))
        if self.sampler.next_ns is None:
            t0 = self.sampler.start(int(times[0]))
            for c in self.curves.values():
                c.restart(t0)
        bid, ask, sym = ticks["bid"], ticks["ask"], ticks["symbol"].astype(np.int64)
        ok = (bid > 0) & (ask > 0) & np.isfinite(bid) & np.isfinite(ask)
        ok &= sym < len(self.marks)
        mid = (bid + ask) * 0.5
        start = 0
        while True:
            # Marks as they stood at each boundary: sample before the tick that reaches it.
            end = max(start, int(np.searchsorted(times, self.sampler.next_ns, side="left")))
            self._mark(sym[start:end], mid[start:end], ok[start:end])
            if end >= len(times):
                break
            k, at = self.sampler.crossed(int(times[end]))
            self._sample(at, k)
            start = end
        keys, outcome = self.signals.on_mids(times[ok], sym[ok], mid[ok])
        for name, want in (("signals_correct", 1), ("signals_wrong", -1), ("signals_flat", 0)):
            sel = keys[outcome == want]
            np.add.at(self.rows.cols[name], sel, 1)
        self.clock_ns = int(times[-1])

    def _mark(self, sym: np.ndarray, mid: np.ndarray, ok: np.ndarray) -> None:
        if not ok.any():
            return
        s, m = sym[ok], mid[ok]
        last = np.full(len(self.marks), -1, np.int64)
        np.maximum.at(last, s, np.arange(len(s)))
        seen = last >= 0
        self.marks[seen] = m[last[seen]]

    def _sample(self, t_ns: int, periods: int) -> None:
        net = self._row_net()
        agent = self.rows.col("agent").astype(np.int64)
        eq_agent = np.bincount(agent, net, minlength=self.agents.n_agents)
        groups = {
            "agent": eq_agent,
            "population": np.bincount(
                self.agents.agent_population, eq_agent, minlength=len(self.agents.populations)
            ),
            "symbol": np.bincount(
                self.rows.col("symbol").astype(np.int64), net, minlength=len(self.marks)
            ),
            "overall": np.array([net.sum()]),
        }
        for g, eq in groups.items():
            self.curves[g].add(t_ns, eq, periods)

    def _row_net(self) -> np.ndarray:
        return self.rows.col("realized") - self.rows.col("fees") + self._unrealized()

    def _unrealized(self) -> np.ndarray:
        qty, avg = self.rows.qty_avg()
        mark = self.marks[self.rows.col("symbol").astype(np.int64)]
        open_ = (qty != 0) & np.isfinite(mark)
        return np.where(open_, qty * (np.where(open_, mark, 0.0) - avg), 0.0)

    # ---- orders and reports ---------------------------------------------------------------

    def on_intents(self, intents: np.ndarray) -> None:
        """Orders sent and signals taken. Intents already counted (a queue re-delivering
        after a restart: seq at or below the host's highest counted) are skipped."""
        if not len(intents):
            return
        host = intents["host"].astype(np.int64)
        seq = intents["seq"].astype(np.int64)
        fresh = np.ones(len(intents), bool)
        for h in np.unique(host).tolist():
            mine = host == h
            fresh &= ~mine | (seq > self._seq.get(h, -1))
            self._seq[h] = max(self._seq.get(h, -1), int(seq[mine].max()))
        # A CANCEL asks for nothing to trade: neither an order nor a signal.
        it = intents[fresh & (intents["order_type"] != OrderType.CANCEL)]
        if not len(it):
            return
        agent = self.agents.agent_index(it["host"], it["population"], it["agent"])
        sym = it["symbol"].astype(np.int64)
        known = self._known(agent, sym)
        it, agent, sym = it[known], agent[known], sym[known]
        ref = self.marks[sym]
        rows = self.rows.rows(agent, sym, self.universe.lots)
        self._orders(rows, it["qty"] * np.nan_to_num(ref))
        for h, s, r, p in zip(it["host"].tolist(), it["seq"].tolist(), rows.tolist(),
                              ref.tolist(), strict=True):  # fmt: skip
            self._open[(h, s)] = [r, p, False]
        due = self.clock_ns + self.agents.horizon_ns[self.agents.agent_population[agent]]
        self.signals.add(rows, sym, it["side"].astype(np.int64), ref, due)

    def _known(self, agent: np.ndarray, sym: np.ndarray) -> np.ndarray:
        """Mask of records about agents and symbols of the layout; the rest (only a bug
        elsewhere makes them: execution rejects unknown symbols) is counted and skipped."""
        known = (agent >= 0) & (sym < len(self.marks))
        self.ignored += int((~known).sum())
        return known

    def _orders(self, rows: np.ndarray, requested_notional: np.ndarray) -> None:
        np.add.at(self.rows.cols["orders"], rows, 1)
        np.add.at(self.rows.cols["requested_notional"], rows, requested_notional)

    def on_reports(self, reports: Mapping[int, np.ndarray]) -> None:
        """Apply REPORT records, per host (as the engine returns them)."""
        for host, rep in reports.items():
            if len(rep):
                self._reports(int(host), rep)

    def _reports(self, host: int, rep: np.ndarray) -> None:
        agent = self.agents.agent_index(host, rep["population"], rep["agent"])
        sym = rep["symbol"].astype(np.int64)
        known = self._known(agent, sym)
        rep, agent, sym = rep[known], agent[known], sym[known]
        rows = self.rows.rows(agent, sym, self.universe.lots)
        kind, seqs, final = rep["kind"], rep["intent_seq"].tolist(), rep["final"]
        for i in np.flatnonzero(kind == ReportKind.FILL).tolist():
            r, qty, price = int(rows[i]), float(rep["fill_qty"][i]), float(rep["fill_price"][i])
            entry = self._open.get((host, seqs[i]))
            ref = price if entry is None or not math.isfinite(entry[1]) else entry[1]
            self._fill(r, int(rep["side"][i]), qty, price, float(rep["fee"][i]), ref)
            if entry is not None:
                entry[2] = True
        rejected = np.flatnonzero(kind == ReportKind.REJECT)
        for i in rejected.tolist():
            self._reject(int(rows[i]), int(rep["reason"][i]))
        for i in np.flatnonzero(final != 0).tolist():
            entry = self._open.pop((host, seqs[i]), None)
            if (entry is not None and entry[2]) or (entry is None and kind[i] == ReportKind.FILL):
                self.rows.cols["orders_filled"][rows[i]] += 1

    def _fill(self, row: int, side: int, qty: float, price: float, fee: float, ref: float) -> None:
        self._carry(row, side, qty, price, fee)
        c = self.rows.cols
        c["turnover"][row] += qty * price
        c["filled_notional"][row] += qty * ref

    def _carry(self, row: int, side: int, qty: float, price: float, fee: float) -> None:
        """The position moves (a fill, or a carry of archived fills: no turnover)."""
        pos = self.rows.positions[row]
        pos.apply(side, round(qty / pos.lot), price, fee)
        self.rows.cols["realized"][row] = pos.realized
        self.rows.cols["fees"][row] = pos.fees

    def _reject(self, row: int, reason: int) -> None:
        try:
            r = RejectReason(reason)
        except ValueError:
            r = RejectReason.VENUE
        # A reject without a reason is the venue's (as the engine reports it).
        self.rows.rejects[row, REASONS.index(r if r in REASONS else RejectReason.VENUE)] += 1

    def replay_journal(
        self,
        orders: Iterable[Mapping],
        fills: Iterable[Mapping],
        marks: Mapping[int, float] | None = None,
    ) -> None:
        """Offline, from journal rows (``journal_read``): orders, outcomes and fills, with
        positions marked and orders referenced at each symbol's last fill price (the
        journal holds no market data; docs/metrics.md, "Offline"). ``marks`` (symbol ->
        price) are those prices when the rows are a selection of the journal: a filter
        must not move the marks. Carry rows (journal archive) make positions, not trades."""
        orders, fills = list(orders), list(fills)
        f = _columns(fills, ("host", "population", "agent", "symbol", "side", "qty", "price",
                             "fee"))  # fmt: skip
        traded = ~_carries(fills)
        if marks is None:
            marks = last_prices(f["symbol"][traded], f["price"][traded])
        for s, price in marks.items():
            if 0 <= s < len(self.marks):
                self.marks[s] = price
        ref = np.nan_to_num(self.marks)
        o = _columns(orders, ("host", "population", "agent", "symbol", "intent_seq", "qty",
                              "state", "filled_qty", "reason", "order_type"))  # fmt: skip
        o["carry"] = _carries(orders)
        rows, o = self._journal_rows(o)
        for h in np.unique(o["host"]).tolist():  # a queue re-delivering them is not new
            top = int(o["intent_seq"][o["host"] == h].max())
            self._seq[h] = max(self._seq.get(h, -1), top)
        # A CANCEL is not an order, nor is a carry (it stands for archived fills).
        trades = (o["order_type"] != OrderType.CANCEL) & ~o["carry"]
        rows, o = rows[trades], {k: v[trades] for k, v in o.items()}
        sym = o["symbol"].astype(np.int64)
        self._orders(rows, o["qty"] * ref[sym])
        done = np.isin(o["state"], [int(s) for s in TERMINAL])
        np.add.at(self.rows.cols["orders_filled"], rows[done & (o["filled_qty"] > 0)], 1)
        for i in np.flatnonzero(o["state"] == OrderState.REJECTED).tolist():
            self._reject(int(rows[i]), int(o["reason"][i]))
        f["traded"] = traded
        rows, f = self._journal_rows(f)
        for i, r in enumerate(rows.tolist()):
            fill = (int(f["side"][i]), float(f["qty"][i]), float(f["price"][i]), float(f["fee"][i]))
            if f["traded"][i]:
                self._fill(r, *fill, float(ref[int(f["symbol"][i])]))
            else:
                self._carry(r, *fill)

    def _journal_rows(self, c: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Ledger rows of journal records (columns), and the records of the layout."""
        agent = self.agents.agent_index(c["host"], c["population"], c["agent"])
        sym = c["symbol"].astype(np.int64)
        known = self._known(agent, sym)
        c = {k: v[known] for k, v in c.items()}
        return self.rows.rows(agent[known], sym[known], self.universe.lots), c

    def seen(self, host_seqs: Mapping[int, int]) -> None:
        """Intents up to these seqs (per host) of the current queues are counted already."""
        for h, s in host_seqs.items():
            self._seq[h] = max(self._seq.get(h, -1), int(s))

    def reset_queues(self) -> None:
        """The intent queues were recreated (a new appliance lifetime): their seqs start
        again, and orders still open from before will get no more reports."""
        self._seq.clear()
        self._open.clear()

    # ---- the figures ----------------------------------------------------------------------

    def figures(self, by: str) -> dict[str, np.ndarray]:
        """Columns of figures per group of ``by`` (agent, population, symbol or overall),
        one entry per group in layout order; see docs/metrics.md."""
        if by not in GROUPINGS:
            raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
        return group_figures(self, by)

    # ---- checkpoints ----------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue later (``load``), as arrays."""
        out = self.rows.state()
        out["marks"] = self.marks
        out["scalars"] = np.array([self.clock_ns, self.sampler.next_ns or -1], np.int64)
        out["seq"] = np.array(sorted(self._seq.items()), np.int64).reshape(-1, 2)
        keys = sorted(self._open)
        out["open.keys"] = np.array(keys, np.int64).reshape(-1, 2)
        out["open.values"] = np.array([self._open[k][:2] for k in keys], float).reshape(-1, 2)
        out["open.filled"] = np.array([self._open[k][2] for k in keys], bool)
        for g, c in self.curves.items():
            out.update(c.state(f"curve.{g}"))
        out.update(self.signals.state())
        return out

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from ``state`` (of a metrics object with the same layout)."""
        s = {k: np.asarray(v) for k, v in state.items()}
        if len(s["marks"]) != len(self.marks):
            raise ValueError("checkpoint has another instrument table")
        if len(s["rows.agent"]) and s["rows.agent"].max() >= self.agents.n_agents:
            raise ValueError("checkpoint has agents this layout lacks")
        self.rows = _Rows()
        self.rows.load(s, self.universe.lots)
        self.marks = s["marks"].astype(float).copy()
        self.clock_ns, nxt = (int(x) for x in s["scalars"])
        self.sampler.next_ns = None if nxt < 0 else nxt
        self._seq = {int(h): int(q) for h, q in s["seq"].tolist()}
        self._open = {
            (int(k[0]), int(k[1])): [int(v[0]), float(v[1]), bool(f)]
            for k, v, f in zip(s["open.keys"], s["open.values"], s["open.filled"], strict=True)
        }
        for g, c in self.curves.items():
            c.load(f"curve.{g}", s)
        self.signals.load(s)


def _columns(records: Iterable[Mapping], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named columns of dict records (floats; indexes and codes are exact in float64)."""
    rows = [tuple(r[n] for n in names) for r in records]
    data = np.array(rows, float).reshape(len(rows), len(names))
    return {n: data[:, i] for i, n in enumerate(names)}


def _carries(records: Sequence[Mapping]) -> np.ndarray:
    """Mask of journal rows that are carries (archive.py), not trades."""
    return np.array([is_carry(r["client_order_id"]) for r in records], bool)


def last_prices(symbols: np.ndarray, prices: np.ndarray) -> dict[int, float]:
    """symbol -> the last of ``prices`` (in fill order) per symbol index in ``symbols``."""
    return dict(zip(symbols.astype(np.int64).tolist(), prices.tolist(), strict=True))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), math.nan)


def group_figures(m: TradingMetrics, by: str) -> dict[str, np.ndarray]:
    """The figures of ``m`` per group of ``by``, as columns (see TradingMetrics.figures)."""
    lay, rows = m.agents, m.rows
    agent = rows.col("agent").astype(np.int64)
    sym = rows.col("symbol").astype(np.int64)
    key, n = {
        "agent": (agent, lay.n_agents),
        "population": (lay.agent_population[agent], len(lay.populations)),
        "symbol": (sym, len(m.universe.symbols)),
        "overall": (np.zeros(len(agent), np.int64), 1),
    }[by]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(key, values, minlength=n)

    qty, _ = rows.qty_avg()
    unreal = m._unrealized()
    mark = m.marks[sym] if len(sym) else np.zeros(0)
    out: dict[str, np.ndarray] = {k: total(rows.col(k)) for k in _SUMS}
    out["unrealized"] = total(unreal)
    out["gross"] = out["realized"] + out["unrealized"]
    out["net"] = out["gross"] - out["fees"]
    out["exposure"] = total(np.abs(qty * np.nan_to_num(mark)))
    out["position"] = total(qty) if by in ("agent", "symbol") else np.full(n, math.nan)
    rejects = np.stack([total(rows.rejects[: rows.n, j]) for j in range(len(REASONS))], axis=1)
    out["rejects"] = rejects.sum(axis=1)
    out["reject_rate"] = _ratio(out["rejects"], out["orders"])
    for j, reason in enumerate(REASONS):
        out[f"rejects_{reason.name.lower()}"] = rejects[:, j]
    out["fill_rate_qty"] = _ratio(out["filled_notional"], out["requested_notional"])
    out["fill_rate_orders"] = _ratio(out["orders_filled"], out["orders"])
    scored = out["signals_correct"] + out["signals_wrong"]
    out["signal_accuracy"] = _ratio(out["signals_correct"], scored)
    curve = m.curves[by]
    ppy = m.sampler.periods_per_year
    out["sharpe"] = curve.sharpe(ppy)
    out["sortino"] = curve.sortino(ppy)
    # Without a sample there is no curve: its figures are unknown, not 0.
    sampled = curve.periods > 0
    out["max_drawdown"] = curve.max_drawdown.copy() if sampled else np.full(n, math.nan)
    out["drawdown_s"] = curve.drawdown_duration_s() if sampled else np.full(n, math.nan)
    out["samples"] = np.full(n, curve.periods, np.int64)
    for k in _COUNTS:
        out[k] = out[k].astype(np.int64)
    for reason in REASONS:
        out[f"rejects_{reason.name.lower()}"] = out[f"rejects_{reason.name.lower()}"].astype(
            np.int64
        )
    return out

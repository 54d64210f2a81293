"""`dynamind orders`, `dynamind fills`, `dynamind pnl`: the journal as readable tables.

The journal is opened read-only, so these work while the appliance runs. Integer codes
become names (symbols from the journal's recorded layout, hosts and population kinds from
the config when it matches the journal, sides, order types, states and reject reasons
from their enums). ``--format table`` is for people, ``csv`` and ``json`` for scripts.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from appliance.config import Config
from appliance.model.instruments import Instrument
from appliance.model.numbers import tidy
from appliance.model.orders import OrderState
from appliance.model.records import OrderType, RejectReason
from appliance.model.universe import AgentLayout, PopulationSlot, Universe
from appliance.ops.arg_types import non_negative_int
from appliance.trading.journal_read import Filters, JournalReader
from appliance.trading.metrics import GROUPINGS, TradingMetrics

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ViewError(ValueError):
    """A filter or option that cannot be applied; the message says which and why."""


def parse_time(text: str, now: float | None = None) -> int:
    """Nanoseconds since the epoch from ISO 8601 (UTC unless it says otherwise), epoch
    seconds, or a duration ago ("90s", "15m", "2h", "1d", also "15m ago")."""
    now = time.time() if now is None else now
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])(?:\s+ago)?", text.strip())
    if m:
        return round((now - float(m[1]) * _UNITS[m[2]]) * 1e9)
    try:
        return round(float(text) * 1e9)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ViewError(
            f"time {text!r}: expected ISO 8601 (2024-05-01T12:00), epoch seconds, or a "
            "duration ago (90s, 15m, 2h, 1d, or 15m ago)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return round(t.timestamp() * 1e9)


def iso(ns: int | None) -> str:
    if ns is None:
        return ""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


@dataclass
class Names:
    """Names for the journal's indexes: symbols, hosts, populations."""

    symbols: list[str]
    universe: Universe

    @classmethod
    def of(cls, reader: JournalReader, config: Config | None) -> Names:
        recorded = reader.layout()
        symbols = list(recorded["symbols"])
        agents = recorded.get("agents") or []
        if not agents:
            raise ViewError(f"{reader.path}: the journal's runs did not record their agents")
        if config is not None:
            configured = [[h, p, pop.agents] for h, host in enumerate(config.hosts)
                          for p, pop in enumerate(host.populations)]  # fmt: skip
            if configured != agents:
                config = None  # another layout: its names would mislead
        pops = []
        for h, p, n in agents:
            host_name, kind, horizon = f"host{h}", "agents", 1.0
            if config is not None:
                host_name = config.hosts[h].name
                pop = config.hosts[h].populations[p]
                kind, horizon = pop.kind, float(pop.params.get("horizon_s", 1.0))
            pops.append(PopulationSlot(h, p, n, host_name, kind, horizon))
        lots = recorded.get("lots") or [1.0] * len(symbols)
        instruments = [Instrument(s, lot) for s, lot in zip(symbols, lots, strict=True)]
        return cls(symbols, Universe(instruments, AgentLayout(pops)))

    def symbol(self, i: int) -> str:
        return self.symbols[i] if 0 <= i < len(self.symbols) else f"#{i}"

    def host(self, h: int) -> str:
        for p in self.universe.agents.populations:
            if p.host == h:
                return p.host_name
        return f"host{h}"

    def filters(self, args: argparse.Namespace) -> Filters:
        """Filters from the command's options, names resolved against the journal."""
        host = pop = agent = None
        if getattr(args, "agent", None):
            host, pop, agent = self._agent_spec(args.agent)
        symbols = None
        if getattr(args, "symbol", None):
            unknown = [s for s in args.symbol if s not in self.symbols]
            if unknown:
                raise ViewError(f"--symbol {unknown}: not in the journal's symbols {self.symbols}")
            symbols = tuple(self.symbols.index(s) for s in args.symbol)
        states = None
        if getattr(args, "state", None):
            states = tuple(s for name in args.state for s in _states(name))
        return Filters(
            since_ns=parse_time(args.since) if args.since else None,
            until_ns=parse_time(args.until) if args.until else None,
            host=host, population=pop, agent=agent, symbols=symbols, states=states,
        )  # fmt: skip

    def _agent_spec(self, spec: str) -> tuple[int, int | None, int | None]:
        """(host, population, agent) of HOST[.POP[.AGENT]], each checked against the
        journal's layout: a selection of nothing is a mistake, not an empty answer."""
        parts = spec.split(".")
        pops = self.universe.agents.populations
        hosts = {p.host_name: p.host for p in pops}
        if len(parts) > 3 or not parts[0]:
            raise ViewError(f"--agent {spec!r}: expected HOST[.POPULATION[.AGENT]]")
        if parts[0] in hosts:
            host = hosts[parts[0]]
        elif parts[0].isdigit() and int(parts[0]) in hosts.values():
            host = int(parts[0])
        else:
            raise ViewError(f"--agent {spec!r}: unknown host {parts[0]!r} (known: {list(hosts)})")
        rest = []
        for part in parts[1:]:
            if not part.isdigit():
                raise ViewError(f"--agent {spec!r}: {part!r} is not an index")
            rest.append(int(part))
        rest += [None] * (2 - len(rest))
        pop, agent = rest
        if pop is not None:
            mine = {p.population: p for p in pops if p.host == host}
            if pop not in mine:
                raise ViewError(
                    f"--agent {spec!r}: host {parts[0]!r} has no population {pop} "
                    f"(populations 0..{max(mine)})"
                )
            if agent is not None and agent >= mine[pop].agents:
                raise ViewError(
                    f"--agent {spec!r}: population {parts[0]}.{pop} has no agent {agent} "
                    f"(agents 0..{mine[pop].agents - 1})"
                )
        return host, pop, agent


def state_names() -> list[str]:
    """What ``--state`` takes: ``open`` (not yet final) and every order state."""
    return ["open", *(s.name.lower() for s in OrderState)]


def _states(name: str) -> list[int]:
    if name == "open":
        return [s for s in OrderState if s < OrderState.FILLED]
    try:
        return [OrderState[name.upper()]]
    except KeyError:
        known = ", ".join(state_names())
        raise ViewError(f"--state {name!r}: unknown (known: {known})") from None


def _enum_name(enum: type, value: int) -> str:
    try:
        return enum(value).name.lower()
    except ValueError:
        return str(value)


_ORDER_ROW = ("time", "order", "host", "population", "agent", "symbol", "side", "type", "qty",
              "limit", "state", "filled", "avg_price", "reason", "detail", "updated")  # fmt: skip
_FILL_ROW = ("time", "fill", "order", "host", "population", "agent", "symbol", "side", "qty",
             "price", "fee", "liquidity", "venue_order")  # fmt: skip


def order_rows(reader: JournalReader, names: Names, f: Filters, limit: int | None) -> list[dict]:
    out = []
    for o in reader.orders(f, limit):
        out.append({
            "time": iso(o["created_ns"]), "order": o["client_order_id"],
            "host": names.host(o["host"]), "population": o["population"], "agent": o["agent"],
            "symbol": names.symbol(o["symbol"]), "side": "buy" if o["side"] > 0 else "sell",
            "type": _enum_name(OrderType, o["order_type"]), "qty": o["qty"],
            "limit": o["limit_price"] or None, "state": _enum_name(OrderState, o["state"]),
            "filled": o["filled_qty"], "avg_price": o["avg_price"],
            "reason": _enum_name(RejectReason, o["reason"]) if o["reason"] else "",
            "detail": o["reason_text"], "updated": iso(o["updated_ns"]),
        })  # fmt: skip
    return out


def fill_rows(reader: JournalReader, names: Names, f: Filters, limit: int | None) -> list[dict]:
    return [
        {
            "time": iso(x["ts_ns"]),
            "fill": x["fill_id"],
            "order": x["client_order_id"],
            "host": names.host(x["host"]),
            "population": x["population"],
            "agent": x["agent"],
            "symbol": names.symbol(x["symbol"]),
            "side": "buy" if x["side"] > 0 else "sell",
            "qty": x["qty"],
            "price": x["price"],
            "fee": x["fee"],
            "liquidity": x["liquidity"],
            "venue_order": x["venue_order_id"] or "",
        }
        for x in reader.fills(f, limit)
    ]


PNL_COLUMNS = ("net", "gross", "fees", "realized", "unrealized", "turnover", "position",
               "orders", "fill_rate_orders", "fill_rate_qty", "rejects", "reject_rate")  # fmt: skip


def figure_rows(m: TradingMetrics, by: str) -> list[dict]:
    """One dict per group: its name, then every figure (NaN as None)."""
    fig = m.figures(by)
    lay = m.agents
    if by == "agent":
        labels = []
        for i in range(lay.n_agents):
            pop, a = lay.who(i)
            labels.append({"host": pop.host_name, "population": pop.population, "agent": a,
                           "kind": pop.kind})  # fmt: skip
    elif by == "population":
        labels = [{"population": p.name} for p in lay.populations]
    elif by == "symbol":
        labels = [{"symbol": s} for s in m.universe.symbols]
    else:
        labels = [{"group": "overall"}]
    out = []
    for i, label in enumerate(labels):
        row = dict(label)
        for k, col in fig.items():
            v = col[i].item()
            row[k] = None if isinstance(v, float) and math.isnan(v) else v
        out.append(row)
    return out


def pnl_rows(reader: JournalReader, names: Names, f: Filters, by: str) -> list[dict]:
    """Figures of the selected rows, marked at the whole journal's prices (a filter
    selects what is shown, it does not change it), one row per selected group."""
    m = TradingMetrics(names.universe)
    m.replay_journal(reader.orders(f), reader.fills(f), reader.last_prices(f))
    rows = figure_rows(m, by)
    if by == "agent":  # agents that did nothing in the selection and hold nothing are noise
        return [r for r in rows if _active(r)]
    if by == "population":
        return [r for r, p in zip(rows, names.universe.agents.populations, strict=True)
                if f.host in (None, p.host) and f.population in (None, p.population)]  # fmt: skip
    if by == "symbol" and f.symbols is not None:
        return [r for i, r in enumerate(rows) if i in f.symbols]
    if by == "symbol" and f.host is not None:  # the symbols the selected agents traded
        return [r for r in rows if _active(r)]
    return rows


def _active(row: dict) -> bool:
    return bool(row["orders"] or row["turnover"] or row["position"])


def render(rows: Sequence[dict], fmt: str, columns: Sequence[str] | None = None) -> str:
    """``rows`` as an aligned table, CSV or a JSON array (floats tidied, see ``tidy``)."""
    rows = [{k: tidy(v) for k, v in r.items()} for r in rows]
    if fmt == "json":
        return orjson.dumps(list(rows), option=orjson.OPT_INDENT_2).decode()
    cols = list(columns or (rows[0].keys() if rows else []))
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if not rows:
        return "(no rows)"
    cells = [[_cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    numeric = [all(_is_num(r.get(c)) for r in rows) for c in cols]
    lines = ["  ".join(c.ljust(w) if not n else c.rjust(w)
                       for c, w, n in zip(cols, widths, numeric, strict=True))]  # fmt: skip
    for row in cells:
        lines.append("  ".join(v.rjust(w) if n else v.ljust(w)
                               for v, w, n in zip(row, widths, numeric, strict=True)))  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def _is_num(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.6g}" if abs(v) < 1e-3 and v else f"{v:,.4f}".rstrip("0").rstrip(".")
    return str(v)


def table_columns(kind: str, by: str = "population") -> list[str] | None:
    """The columns a person sees (csv/json keep every one)."""
    if kind == "pnl":
        first = {"agent": ["host", "population", "agent"], "population": ["population"],
                 "symbol": ["symbol"], "overall": ["group"]}[by]  # fmt: skip
        return [*first, *PNL_COLUMNS]
    if kind == "orders":
        return ["time", "order", "host", "population", "agent", "symbol", "side", "type", "qty",
                "limit", "state", "filled", "avg_price", "reason"]  # fmt: skip
    return None


def add_arguments(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("--journal", metavar="PATH", help="journal file (default: the config's)")
    p.add_argument("--since", metavar="T", help="from time T (ISO 8601, epoch s, or 15m ago)")
    p.add_argument("--until", metavar="T", help="before time T")
    p.add_argument("--agent", metavar="HOST[.POP[.AGENT]]", help="one host, population or agent")
    p.add_argument("--symbol", action="append", metavar="NAME", help="symbol (repeatable)")
    if kind == "orders":
        p.add_argument("--state", action="append", metavar="STATE",
                       help=f"{', '.join(state_names())} (repeatable)")  # fmt: skip
    if kind == "pnl":
        p.add_argument("--by", choices=GROUPINGS, default="population", help="one row per")
    else:
        p.add_argument("--limit", type=non_negative_int, default=100, metavar="N",
                       help="newest N rows (0: all)")  # fmt: skip
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table for people, csv or json for scripts")  # fmt: skip


def run(kind: str, args: argparse.Namespace, config: Config | None, journal: str) -> str:
    """The command's output text; ViewError or JournalError when it cannot be made."""
    with JournalReader(journal) as reader:
        names = Names.of(reader, config)
        f = names.filters(args)
        if kind == "orders":
            rows = order_rows(reader, names, f, args.limit or None)
        elif kind == "fills":
            rows = fill_rows(reader, names, f, args.limit or None)
        else:
            rows = pnl_rows(reader, names, f, args.by)
    columns = table_columns(kind, getattr(args, "by", "")) if args.format == "table" else None
    if not rows and args.format == "csv":  # a header even for no rows: scripts read it
        columns = _all_columns(kind, getattr(args, "by", ""), names)
    return render(rows, args.format, columns)


def _all_columns(kind: str, by: str, names: Names) -> list[str]:
    """Every column a row of ``kind`` has, in order (what a row would have given)."""
    if kind == "orders":
        return list(_ORDER_ROW)
    if kind == "fills":
        return list(_FILL_ROW)
    labels = {"agent": ["host", "population", "agent", "kind"], "population": ["population"],
              "symbol": ["symbol"]}.get(by, ["group"])  # fmt: skip
    return [*labels, *TradingMetrics(names.universe).figures("overall")]

"""`dynamind orders / fills / pnl` on a real journal written by the real engine."""

from __future__ import annotations

import csv
import io
import json

import pytest

from appliance.model.records import Side
from appliance.ops import journal_views
from appliance.ops.cli import build_parser
from appliance.trading.engine import EngineConfig, ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskLimits
from appliance.venues.paper import PaperVenue

SYMS = ["BTC/USD", "ETH/USD"]


@pytest.fixture
def journal(tmp_path, quotes, intents):
    """A journal the engine still holds open (as while the appliance runs)."""
    limits = {"BTC/USD": RiskLimits(10.0, 1e6), "ETH/USD": RiskLimits(100.0, 1e6)}
    e = ExecutionEngine(
        SYMS,
        limits,
        Journal(tmp_path / "journal.sqlite", synchronous="NORMAL"),
        PaperVenue(
            tmp_path / "venue.sqlite", 2, lot_size=0.001, taker_bps=10, synchronous="NORMAL"
        ),
        EngineConfig(lot_size=0.001),
        agents={(0, 0): 3},
    )
    e.recover("q")
    e.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=50.0))
    e.process(intents([
        {"seq": 0, "agent": 0, "qty": 1.0},                                # buys 1 @ 101
        {"seq": 1, "agent": 1, "symbol": 1, "side": Side.SELL, "qty": 200},  # > max position
        {"seq": 2, "agent": 2, "qty": 2.0},                                # buys 2 @ 101
    ]))  # fmt: skip
    e.on_ticks(quotes([0], [105.0], [106.0], size=50.0))
    e.process(intents([{"seq": 3, "agent": 0, "side": Side.SELL, "qty": 1.0}]))  # 1 @ 105
    yield tmp_path / "journal.sqlite"
    e.close()


def view(kind: str, path, *args: str) -> str:
    ns = build_parser().parse_args([kind, "--journal", str(path), *args])
    return journal_views.run(kind, ns, None, str(path))


def test_orders_are_named_and_filtered(journal):
    out = view("orders", journal, "--format", "json")
    rows = json.loads(out)
    assert [r["state"] for r in rows] == ["filled", "rejected", "filled", "filled"]
    rejected = rows[1]
    assert rejected["symbol"] == "ETH/USD" and rejected["side"] == "sell"
    assert rejected["reason"] == "max_position" and rejected["type"] == "market"
    assert rows[0]["host"] == "host0" and rows[0]["avg_price"] == pytest.approx(101.0)
    only = json.loads(view("orders", journal, "--format", "json", "--state", "rejected"))
    assert [r["order"] for r in only] == [rejected["order"]]
    agent0 = json.loads(view("orders", journal, "--format", "json", "--agent", "0.0.0"))
    assert [r["side"] for r in agent0] == ["buy", "sell"]
    eth = json.loads(view("orders", journal, "--format", "json", "--symbol", "ETH/USD"))
    assert len(eth) == 1
    newest = json.loads(view("orders", journal, "--format", "json", "--limit", "2"))
    assert [r["order"] for r in newest] == [r["order"] for r in rows[-2:]]
    future = json.loads(view("orders", journal, "--format", "json", "--since", "4000000000"))
    assert future == []


def test_fills_csv(journal):
    rows = list(csv.DictReader(io.StringIO(view("fills", journal, "--format", "csv"))))
    assert [(r["agent"], r["side"], float(r["price"])) for r in rows] == [
        ("0", "buy", 101.0), ("2", "buy", 101.0), ("0", "sell", 105.0),
    ]  # fmt: skip
    assert float(rows[0]["fee"]) == pytest.approx(1 * 101 * 10 / 1e4)


def test_pnl_by_agent_and_overall(journal):
    agents = {r["agent"]: r for r in json.loads(view("pnl", journal, "--by", "agent",
                                                      "--format", "json"))}  # fmt: skip
    a0 = agents[0]
    assert a0["realized"] == pytest.approx(4.0)
    assert a0["fees"] == pytest.approx(0.101 + 0.105)
    assert a0["net"] == pytest.approx(4.0 - 0.206)
    assert a0["turnover"] == pytest.approx(206.0)
    assert agents[1]["rejects_max_position"] == 1 and agents[1]["reject_rate"] == 1.0
    # Agent 2 holds 2 BTC bought at 101, marked at the last fill price (105).
    assert agents[2]["unrealized"] == pytest.approx(8.0) and agents[2]["position"] == 2.0
    (overall,) = json.loads(view("pnl", journal, "--by", "overall", "--format", "json"))
    assert overall["orders"] == 4 and overall["orders_filled"] == 3
    assert overall["fees"] == pytest.approx(0.101 + 0.202 + 0.105)
    table = view("pnl", journal)
    assert table.splitlines()[0].split()[:4] == ["population", "net", "gross", "fees"]
    assert "host0.0:agents" in table


def test_bad_filters_say_what_is_wrong(journal):
    with pytest.raises(journal_views.ViewError, match="unknown host"):
        view("orders", journal, "--agent", "nohost")
    with pytest.raises(journal_views.ViewError, match="not in the journal's symbols"):
        view("fills", journal, "--symbol", "XRP/USD")
    with pytest.raises(journal_views.ViewError, match="ISO 8601"):
        view("orders", journal, "--since", "yesterday")
    with pytest.raises(journal_views.ViewError, match="unknown"):
        view("orders", journal, "--state", "gone")


def test_parse_time_forms():
    now = 1_700_000_000.0
    assert journal_views.parse_time("15m", now) == round((now - 900) * 1e9)
    assert journal_views.parse_time("2024-01-01T00:00:00") == 1_704_067_200 * 10**9
    assert journal_views.parse_time("1704067200") == 1_704_067_200 * 10**9

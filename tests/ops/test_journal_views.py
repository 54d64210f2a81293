"""`dynamind orders / fills / pnl` on a real journal written by the real engine."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest

from appliance.model.records import OrderType, Side
from appliance.model.universe import Universe
from appliance.ops import journal_views
from appliance.ops.cli import build_parser
from appliance.runtime.exits import Exit
from appliance.trading.archive import archive_runs
from appliance.trading.engine import ExecutionEngine
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskLimits
from appliance.venues.paper import PaperVenue
from tests.harness import dynamind

SYMS = ["BTC/USD", "ETH/USD"]


def _engine(path, quotes) -> ExecutionEngine:
    limits = {"BTC/USD": RiskLimits(10.0, 1e6), "ETH/USD": RiskLimits(100.0, 1e6)}
    e = ExecutionEngine(
        Universe.of(SYMS, 0.001, {(0, 0): 3}),
        limits,
        Journal(path / "journal.sqlite", synchronous="NORMAL"),
        PaperVenue(path / "venue.sqlite", 2, lot_size=0.001, taker_bps=10, synchronous="NORMAL"),
    )
    e.recover("q")
    e.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=50.0))
    return e


def _trade(e: ExecutionEngine, quotes, intents) -> None:
    e.process(intents([
        {"seq": 0, "agent": 0, "qty": 1.0},                                # buys 1 @ 101
        {"seq": 1, "agent": 1, "symbol": 1, "side": Side.SELL, "qty": 200},  # > max position
        {"seq": 2, "agent": 2, "qty": 2.0},                                # buys 2 @ 101
    ]))  # fmt: skip
    e.on_ticks(quotes([0], [105.0], [106.0], size=50.0))
    e.process(intents([{"seq": 3, "agent": 0, "side": Side.SELL, "qty": 1.0}]))  # 1 @ 105


@pytest.fixture
def journal(tmp_path, quotes, intents):
    """A journal the engine still holds open (as while the appliance runs)."""
    e = _engine(tmp_path, quotes)
    _trade(e, quotes, intents)
    yield tmp_path / "journal.sqlite"
    e.close()


@pytest.fixture
def archived(tmp_path, quotes, intents):
    """The same trading, its run archived: agent 2's 2 BTC @ 101 is a carry fill."""
    e = _engine(tmp_path, quotes)
    _trade(e, quotes, intents)
    e.record_drained({0: 4})
    e.close()
    path = tmp_path / "journal.sqlite"
    summary = archive_runs(path, time.time_ns() + 10**9, tmp_path / "archive.sqlite")
    assert summary.carried == 1
    return path


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


def test_fills_say_maker_taker_or_internal(tmp_path, quotes, intents):
    e = _engine(tmp_path, quotes)
    e.process(intents([
        {"seq": 0, "agent": 0, "qty": 1.0, "order_type": OrderType.LIMIT, "limit_price": 99.0},
        {"seq": 1, "agent": 1, "qty": 1.0},                       # takes the ask
    ]))  # fmt: skip
    e.on_ticks(quotes([0], [97.0], [98.0], size=50.0))  # reaches the resting buy
    e.process(intents([
        {"seq": 2, "agent": 1, "qty": 1.0, "side": Side.SELL},  # crosses agent 2's buy
        {"seq": 3, "agent": 2, "qty": 1.0},
    ]))  # fmt: skip
    e.close()
    rows = json.loads(view("fills", tmp_path / "journal.sqlite", "--format", "json"))
    assert [(r["agent"], r["liquidity"]) for r in rows] == [
        (1, "taker"), (0, "maker"), (1, "internal"), (2, "internal"),
    ]


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


@pytest.mark.parametrize(
    ("kind", "args", "error"),
    [
        ("orders", ["--agent", "nohost"], "unknown host"),
        ("orders", ["--agent", "7"], "unknown host"),
        ("pnl", ["--agent", "0.1"], "no population 1"),
        ("fills", ["--agent", "0.0.9999"], "no agent 9999"),
        ("fills", ["--symbol", "XRP/USD"], "not in the journal's symbols"),
        ("orders", ["--since", "yesterday"], "ISO 8601"),
        ("orders", ["--state", "gone"], "unknown"),
    ],
)
def test_bad_filters_say_what_is_wrong(journal, kind, args, error):
    with pytest.raises(journal_views.ViewError, match=error):
        view(kind, journal, *args)


def test_parse_time_forms():
    now = 1_700_000_000.0
    assert journal_views.parse_time("15m", now) == round((now - 900) * 1e9)
    assert journal_views.parse_time("2024-01-01T00:00:00") == 1_704_067_200 * 10**9
    assert journal_views.parse_time("1704067200") == 1_704_067_200 * 10**9
    assert journal_views.parse_time("15m ago", now) == round((now - 900) * 1e9)
    assert journal_views.parse_time("2h ago", now) == round((now - 7200) * 1e9)


def test_pnl_filters_select_rows_without_changing_them(journal):
    def agents(*args: str) -> dict:
        rows = json.loads(view("pnl", journal, "--by", "agent", "--format", "json", *args))
        return {r["agent"]: r for r in rows}

    everyone = agents()
    # Agent 2 alone: its 2 BTC are still marked at the journal's last BTC price (105), not at
    # the last price of its own fills (101).
    (alone,) = agents("--agent", "0.0.2").values()
    assert alone["unrealized"] == pytest.approx(8.0) == everyone[2]["unrealized"]
    assert alone["net"] == everyone[2]["net"]
    assert agents("--symbol", "BTC/USD")[2]["unrealized"] == pytest.approx(8.0)
    # Groups the filter excludes are not shown as zero rows.
    symbols = json.loads(view("pnl", journal, "--by", "symbol", "--symbol", "ETH/USD",
                              "--format", "json"))  # fmt: skip
    assert [r["symbol"] for r in symbols] == ["ETH/USD"]
    assert symbols[0]["rejects"] == 1
    agent0 = json.loads(view("pnl", journal, "--by", "symbol", "--agent", "0.0.0",
                             "--format", "json"))  # fmt: skip
    assert [r["symbol"] for r in agent0] == ["BTC/USD"]  # it never traded ETH


def test_bad_numbers_are_usage_errors(journal, capsys):
    for argv in (["orders", "--limit", "-5"], ["run", "--duration", "-3"],
                 ["run", "--duration", "0"], ["status", "--watch", "-1"],
                 ["top", "--interval", "0"], ["reload", "--timeout", "-2"],
                 ["trading", "halt", "--timeout", "nan"],
                 ["exchange-sim", "--data", "x", "--speed", "0"]):  # fmt: skip
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 2
    assert "must be" in capsys.readouterr().err


def test_state_help_lists_every_state(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["orders", "-h"])
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("open", "new", "submitted", "accepted", "partially_filled", "filled",
                 "canceled", "rejected", "done"):  # fmt: skip
        assert f"{name}," in help_text or f"{name} (repeatable)" in help_text, name


def test_curve_figures_are_unknown_and_floats_are_tidy(journal):
    out = view("pnl", journal, "--by", "overall", "--format", "json")
    (overall,) = json.loads(out)
    for k in ("max_drawdown", "drawdown_s", "sharpe", "sortino"):
        assert overall[k] is None, k
    assert overall["samples"] == 0
    assert overall["fees"] == 0.408 and "0.40800000000000003" not in out
    csv_out = view("pnl", journal, "--by", "overall", "--format", "csv")
    assert "0.408," in csv_out and "00000000" not in csv_out
    assert journal_views.tidy(1.24345e-13) == 0.0
    assert journal_views.tidy(-0.036000000000000004) == -0.036
    assert journal_views.tidy(0.0005700000000000001) == 0.00057


def test_carried_positions_are_not_trading(archived):
    (overall,) = json.loads(view("pnl", archived, "--by", "overall", "--format", "json"))
    assert overall["orders"] == 0 and overall["turnover"] == 0.0
    agents = json.loads(view("pnl", archived, "--by", "agent", "--format", "json"))
    assert [(r["agent"], r["position"], r["orders"]) for r in agents] == [(2, 2.0, 0)]


@pytest.mark.parametrize("kind", ["pnl", "orders", "fills"])
def test_damaged_journal_is_named_without_a_traceback(damaged_journal, kind):
    res = dynamind(kind, "--journal", str(damaged_journal))
    assert res.returncode == Exit.JOURNAL_UNUSABLE, res.stdout + res.stderr
    assert res.stderr.startswith(f"{damaged_journal}: damaged journal (database disk image")
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("kind", ["pnl", "orders", "fills"])
def test_a_file_that_is_no_journal_is_unusable_and_a_missing_one_a_usage_error(
    garbage_journal, tmp_path, kind
):
    res = dynamind(kind, "--journal", str(garbage_journal))
    assert res.returncode == Exit.JOURNAL_UNUSABLE, res.stdout + res.stderr
    assert "not a usable dynamind journal" in res.stderr and "Traceback" not in res.stderr
    res = dynamind(kind, "--journal", str(tmp_path / "none.sqlite"))
    assert res.returncode == Exit.USAGE and res.stderr.endswith("no journal here\n")


@pytest.mark.parametrize("kind", ["orders", "fills", "pnl"])
def test_csv_of_no_rows_has_the_header_of_rows(journal, kind):
    by = ("--by", "agent") if kind == "pnl" else ()
    full = view(kind, journal, "--format", "csv", *by).splitlines()
    empty = view(kind, journal, "--format", "csv", *by, "--since", "4000000000")
    assert len(full) > 1 and empty.splitlines() == full[:1]

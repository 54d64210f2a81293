"""Composition from Config: the execution engine a config describes."""

from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.model.enums import TradingState
from appliance.model.records import RejectReason
from appliance.trading.account import AccountLimits, Rate
from appliance.trading.risk import RiskLimits
from appliance.workers import compose

DEFAULT = Path(__file__).resolve().parents[2] / "config" / "dynamind.toml"


@pytest.fixture
def config(tmp_path):
    """The default config with its journal and venue files under tmp_path; ``config(**t)``
    validates it again with top-level tables replaced."""
    data = load_config(DEFAULT).model_dump()
    data["journal_path"] = tmp_path / "var" / "journal.sqlite"
    data["venue_state_path"] = tmp_path / "var" / "venue.sqlite"
    return lambda **tables: Config.model_validate({**data, **tables})


def test_execution_engine_from_config(config, quotes, intents):
    cfg = config()
    e = compose.execution_engine(cfg)
    assert e.recover().run_id == 1
    agents = [[h, p, pop.agents] for h, host in enumerate(cfg.hosts)
              for p, pop in enumerate(host.populations)]  # fmt: skip
    assert e.journal.last_layout() == {
        "symbols": [s.name for s in cfg.symbols],
        "lots": [s.lot_size for s in cfg.symbols],
        "agents": agents,
    }
    assert e.symbols == [s.name for s in cfg.symbols]
    assert e.lots.tolist() == [s.lot_size for s in cfg.symbols]
    first = cfg.symbols[0]
    e.on_ticks(quotes(0, 1.0, 1.0))  # cheap enough that only max_position can bind
    rep = e.process(intents([{"qty": first.max_position}, {"seq": 1, "qty": first.lot_size}]))
    refused = rep[0][rep[0]["reason"] != 0]
    assert refused["intent_seq"].tolist() == [1]
    assert refused["reason"].tolist() == [RejectReason.MAX_POSITION]
    assert e.status().trading == "active"
    e.close()


def test_reduce_only_from_config(config, quotes, intents):
    e = compose.execution_engine(config(trading={"state": "reduce_only"}))
    e.recover()
    assert e.status().trading == "reduce_only"
    e.on_ticks(quotes(0, 1.0, 1.0))
    rep = e.process(intents([{"qty": 0.001}]))  # a flat agent may not open a position
    assert rep[0]["reason"].tolist() == [RejectReason.REDUCE_ONLY]
    e.close()


def test_pre_trade_rules_from_config(config):
    data = load_config(DEFAULT).model_dump()
    data["symbols"][1]["netting"] = "priority"
    data["hosts"][1]["populations"][0]["priority"] = 3
    cfg = config(
        risk={"max_drawdown": 7.0, "drawdown_action": "halted",
              "agent_order_rate": {"rate": 2.0, "burst": 3.0}},
        symbols=data["symbols"], hosts=data["hosts"],
    )  # fmt: skip
    r = compose.rules(cfg)
    assert r.account == AccountLimits(
        agent_rate=Rate(2.0, 3.0), max_drawdown=7.0, drawdown_action=TradingState.HALTED
    )
    assert r.limits["BTC/USDT"] == RiskLimits(0.02, 5000.0, 0.02, 500.0, 10)
    assert r.policies == {"BTC/USDT": "net", "ETH/USDT": "priority", "SOL/USDT": "net",
                          "BNB/USDT": "net"}  # fmt: skip
    assert r.priorities == {(0, 0): 0, (1, 0): 3}
    e = compose.execution_engine(cfg)
    assert e.rules == r and e.router.policies[1] == "priority"
    e.close()

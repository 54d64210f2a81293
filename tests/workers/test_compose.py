"""Composition from Config: the execution engine a config describes."""

from pathlib import Path

import pytest

from appliance.config import Config, load_config
from appliance.model.records import RejectReason
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
    rep = e.process(intents([{"qty": first.max_position + first.lot_size}]))
    assert rep[0]["reason"].tolist() == [RejectReason.MAX_POSITION]
    assert e.status()["trading"] == "active"
    e.close()


def test_reduce_only_from_config(config, quotes, intents):
    e = compose.execution_engine(config(trading={"state": "reduce_only"}))
    e.recover()
    assert e.status()["trading"] == "reduce_only"
    e.on_ticks(quotes(0, 1.0, 1.0))
    rep = e.process(intents([{"qty": 0.001}]))  # a flat agent may not open a position
    assert rep[0]["reason"].tolist() == [RejectReason.HALTED]
    e.close()

"""Config: the shipped files load, every kind of error is reported with its location,
and diffs say what a reload can apply live."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.config import Config, ConfigError, diff_config, load_config
from appliance.feeds.parquet import ParquetRecorder
from appliance.feeds.tickfile import TickFileWriter
from appliance.model.enums import TradingState
from appliance.model.instruments import Instrument
from appliance.model.records import TICK, TickKind

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "config" / "dynamind.toml"

SYMBOL = """
[[symbols]]
name = "{name}"
start_price = 100.0
tick_size = 0.01
lot_size = 0.001
max_position = 5.0
max_order_notional = 1000.0
"""

HOST = """
[[hosts]]
name = "{name}"
[[hosts.populations]]
kind = "ema_cross"
agents = 10
"""


def minimal(*extra: str, symbols=("BTC/USDT", "ETH/USDT"), hosts=("a", "b")) -> str:
    text = "".join(SYMBOL.format(name=s) for s in symbols)
    text += "".join(HOST.format(name=h) for h in hosts)
    return "\n".join(extra) + "\n" + text


def load(tmp_path, text: str, **kw) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, **kw)


def errors_of(tmp_path, text: str, **kw) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, **kw)
    err = info.value
    lines = str(err).splitlines()
    # str lists every error, one per line, prefixed with the file.
    assert len(lines) == len(err.errors)
    assert all(line.startswith(f"{tmp_path / 'c.toml'}: ") for line in lines)
    return dict(err.errors)


def test_default_config_loads_and_round_trips():
    cfg = load_config(DEFAULT)
    assert cfg.symbol_names == ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
    assert [h.name for h in cfg.hosts] == ["host-a", "host-b"]
    assert cfg.feed.kind == "synthetic" and cfg.execution.venue == "paper"
    assert Config.model_validate(cfg.model_dump()) == cfg
    assert cfg.population_symbols(0, 0) == [0, 1, 2, 3]
    assert cfg.population_seed(0, 0) != cfg.population_seed(1, 0)


def test_examples_load(tmp_path, monkeypatch):
    assert load_config(ROOT / "config/examples/bench.toml").feed.rate == 0
    # The replay example reads var/history relative to the current directory.
    monkeypatch.chdir(tmp_path)
    history = ParquetRecorder("var/history", [Instrument("ETH/USDT", 0.001)], {})
    tick = np.zeros(1, dtype=TICK)
    tick["kind"] = TickKind.QUOTE
    history.append(tick)
    history.close()
    cfg = load_config(ROOT / "config/examples/replay.toml")
    assert cfg.feed.kind == "replay" and cfg.feed.loop


def test_field_errors_are_all_reported_with_their_locations(tmp_path):
    text = minimal(
        'colour = "blue"',
        "ring_capacity = 1000",
        'log_format = "xml"',
        "[supervisor]",
        "max_restarts = 0",
    ).replace("agents = 10", "agents = 0", 2)
    text = text.replace("tick_size = 0.01", "tick_size = -1.0", 1)
    errors = errors_of(tmp_path, text)
    assert errors["colour"] == "unknown key"
    assert "power of two" in errors["ring_capacity"]
    assert "'text' or 'json'" in errors["log_format"]
    assert "greater than 0" in errors["supervisor.max_restarts"]
    assert "greater than 0" in errors["symbols[0].tick_size"]
    assert "greater than or equal to 1" in errors["hosts[1].populations[0].agents"]
    assert "hosts[0].populations[0].agents" in errors


def test_trading_state_names_every_state(tmp_path):
    for state in TradingState:
        cfg = load(tmp_path, minimal("[trading]", f'state = "{state.value}"'))
        assert cfg.trading.state is state
    errors = errors_of(tmp_path, minimal("[trading]", 'state = "paused"'))
    assert "'active', 'halted' or 'reduce_only'" in errors["trading.state"]
    old = load_config(DEFAULT)
    new = _variant(old, lambda d: d["trading"].update(state="reduce_only"))
    (change,) = diff_config(old, new)
    assert str(change) == "trading.state: 'active' -> 'reduce_only' (live)"


def test_cross_table_errors_are_all_reported(tmp_path):
    text = minimal(symbols=("BTC/USDT", "BTC/USDT"), hosts=("a", "a", "feed")) + (
        '[[hosts]]\nname = "c"\n'
        '[[hosts.populations]]\nkind = "ema_cross"\nagents = 5\nsymbols = ["DOGE/USDT"]\n'
        "[hosts.populations.params]\nqty = [1.0, 2.0]\nspeed = 3\n"
        '[[hosts.populations]]\nkind = "martingale"\nagents = 5\n'
        '[[hosts.populations]]\nkind = "ema_cross"\nagents = 1\n'
        "[hosts.populations.params]\nfast = [30, 60]\n"
    )
    errors = errors_of(tmp_path, text)
    assert errors["symbols[1].name"] == "duplicate symbol 'BTC/USDT'"
    assert errors["hosts[1].name"] == "duplicate host name 'a'"
    assert errors["hosts[2].name"] == "'feed' is reserved"
    assert errors["hosts[3].populations[0].symbols[0]"] == "unknown symbol 'DOGE/USDT'"
    assert errors["hosts[3].populations[0].params.speed"] == "unknown key"
    assert "qty lists 2 quantities" in errors["hosts[3].populations[0].params.qty"]
    assert "below slow periods" in errors["hosts[3].populations[2].params"]
    assert "fewer agents than symbols" in errors["hosts[3].populations[2].agents"]
    assert "unknown population kind 'martingale'" in errors["hosts[3].populations[1].kind"]


def test_cpu_layout_errors(tmp_path):
    explicit = minimal("[cpu]", 'mode = "explicit"', "[cpu.cores]", "feed = [0]", "gpu = [1]")
    errors = errors_of(tmp_path, explicit, available_cores={0, 1})
    assert errors["cpu.cores.gpu"].startswith("unknown process")
    assert errors["cpu.cores"] == "mode 'explicit' needs cores for execution, a, b"

    missing_core = minimal(
        "[cpu]",
        'mode = "explicit"',
        "[cpu.cores]",
        "feed = [0]",
        "execution = [1]",
        "a = [0]",
        "b = [4096]",
    )
    assert "cores [4096] are not available" in errors_of(tmp_path, missing_core)["cpu"]
    assert load(tmp_path, missing_core, available_cores=range(5000)).cpu.cores["b"] == [4096]

    auto = minimal("[cpu]", "[cpu.cores]", "feed = [0]")
    assert "only used with mode = 'explicit'" in errors_of(tmp_path, auto)["cpu"]


def test_feed_and_supervisor_rules(tmp_path):
    errors = errors_of(
        tmp_path,
        minimal(
            "[feed]",
            'kind = "replay"',
            "batch_size = 40000",
            "trade_ratio = 2.0",
            "[supervisor]",
            "restart_backoff_initial_s = 9.0",
            "restart_backoff_max_s = 1.0",
        ),
    )
    long_drain = errors_of(tmp_path, minimal("[supervisor]", "drain_timeout_s = 120.0"))
    assert "less than or equal to 80" in long_drain["supervisor.drain_timeout_s"]
    assert errors["feed.path"] == "the replay feed needs a path"
    assert "less than or equal to 1" in errors["feed.trade_ratio"]
    assert "exceeds restart_backoff_max_s" in errors["supervisor"]
    missing = errors_of(tmp_path, minimal("[feed]", 'kind = "replay"', 'path = "no.dmt"'))
    assert missing["feed.path"] == "replay source 'no.dmt' does not exist"
    half = errors_of(tmp_path, minimal("ring_capacity = 1024", "[feed]", "batch_size = 1000"))
    assert "at most half the ring" in half["feed.batch_size"]


def test_replay_file_symbols_must_be_configured(tmp_path):
    with TickFileWriter(tmp_path / "t.dmt", ["BTC/USDT", "XRP/USDT"]):
        pass
    text = minimal("[feed]", 'kind = "replay"', f'path = "{tmp_path / "t.dmt"}"')
    assert "['XRP/USDT'] are not in" in errors_of(tmp_path, text)["feed.path"]


def test_toml_syntax_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, 'instance = "x"\nbad key = 1\n')
    assert info.value.errors[0][0] == "line 2, column 5"
    assert str(info.value).startswith(f"{tmp_path / 'c.toml'}: line 2, column 5: TOML syntax")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def _variant(cfg: Config, edit) -> Config:
    data = cfg.model_dump()
    edit(data)
    return Config.model_validate(data)


def test_diff_classifies_live_and_restart_changes():
    old = load_config(DEFAULT)
    assert diff_config(old, old) == []

    def edit(d):
        d["symbols"][1]["max_position"] = 1.0
        d["symbols"][0]["max_order_notional"] = 1.0
        d["trading"]["state"] = "halted"
        d["feed"]["rate"] = 500.0
        d["log_format"] = "json"
        d["status_interval_s"] = 2.0
        d["feed"]["seed"] = 9
        d["symbols"][2]["start_price"] = 151.0
        d["execution"]["taker_fee_bps"] = 5.0
        d["journal_path"] = Path("elsewhere.sqlite")
        d["recorder"]["enabled"] = True
        d["recorder"]["path"] = Path("elsewhere.dmt")
        d["hosts"][1]["populations"][0]["params"]["fast"] = [6, 9]
        d["hosts"][0]["populations"][0]["seed"] = 5
        d["wait"] = "spin"
        d["operator_group"] = "root"
        d["compute"]["backend"] = "numpy"
        d["ring_capacity"] = 1 << 17
        d["instance"] = "other"
        d["symbols"][3]["tick_size"] = 0.001
        d["hosts"][0]["populations"][0]["agents"] = 301

    changes = {c.path: c for c in diff_config(old, _variant(old, edit))}
    restart = {path: c.restart for path, c in changes.items()}
    assert restart == {
        "symbols[1].max_position": None,
        "symbols[0].max_order_notional": None,
        "trading.state": None,
        "feed.rate": None,
        "log_format": None,
        "status_interval_s": None,
        "feed.seed": "feed",
        "symbols[2].start_price": "appliance",
        "execution.taker_fee_bps": "execution",
        "journal_path": "appliance",
        "recorder.enabled": "appliance",
        "recorder.path": "recorder",
        "hosts[1].populations[0].params": "host-b",
        "hosts[0].populations[0].seed": "host-a",
        "wait": "appliance",
        "operator_group": "appliance",
        "compute.backend": "appliance",
        "ring_capacity": "appliance",
        "instance": "appliance",
        "symbols[3].tick_size": "appliance",
        "hosts[0].populations[0].agents": "appliance",
    }
    rate = changes["feed.rate"]
    assert (rate.old, rate.new, rate.live, rate.refused) == (20000.0, 500.0, True, False)
    assert str(rate) == "feed.rate: 20000.0 -> 500.0 (live)"
    assert str(changes["feed.seed"]).endswith("(restart feed)")
    ring = changes["ring_capacity"]
    assert ring.refused and not ring.live
    assert str(ring).endswith(
        "(needs a restart of the whole appliance: it sizes shared-memory segments)"
    )
    assert all(c.why for c in changes.values() if c.refused)


def test_diff_of_layout_lists():
    old = load_config(DEFAULT)
    fewer = _variant(old, lambda d: d["hosts"].pop())
    (change,) = diff_config(old, fewer)
    assert (change.path, change.restart, len(change.old), len(change.new)) == (
        "hosts",
        "appliance",
        2,
        1,
    )
    explicit = _variant(
        old,
        lambda d: d["cpu"].update(
            mode="explicit", cores={"feed": [0], "execution": [1], "host-a": [0], "host-b": [1]}
        ),
    )
    moved = _variant(explicit, lambda d: d["cpu"]["cores"].update({"host-a": [1]}))
    assert [(c.path, c.restart) for c in diff_config(explicit, moved)] == [
        ("cpu.cores.host-a", "host-a")
    ]
    assert {c.restart for c in diff_config(old, explicit)} == {
        "appliance",
        "feed",
        "execution",
        "host-a",
        "host-b",
    }


def test_union_errors_name_the_value_not_pydantics_type_tags(tmp_path):
    text = minimal() + "[hosts.populations.params]\nqty = -1\n"
    errs = errors_of(tmp_path, text)
    loc = "hosts[1].populations[0].params.qty"
    assert set(errs) == {loc}, errs
    assert "constrained" not in errs[loc] and "list[" not in errs[loc]
    assert errs[loc] == (
        "as a number: Input should be greater than 0 (got -1); "
        "or as a list: Input should be a valid list (got -1)"
    )


def test_risk_tables(tmp_path):
    text = minimal(
        "[trading]", "priority_window_s = 0.5",
        "[risk]", "max_gross_exposure = 1e6", "max_drawdown = 500", 'drawdown_action = "halted"',
        "agent_order_rate = { rate = 5, burst = 10 }",
    )  # fmt: skip
    notional = "max_order_notional = 1000.0"
    cfg = load(tmp_path, text.replace(notional, notional + '\nnetting = "priority"'))
    assert cfg.risk.agent_order_rate.burst == 10 and cfg.risk.order_rate is None
    assert cfg.risk.drawdown_action == "halted" and cfg.trading.priority_window_s == 0.5
    assert [s.netting for s in cfg.symbols] == ["priority", "priority"]
    assert cfg.symbols[0].max_order_qty is None and cfg.symbols[0].max_open_orders == 50
    errors = errors_of(tmp_path, minimal(
        "[risk]", 'drawdown_action = "active"', "order_rate = { rate = 5, burst = 0.5 }",
        "max_drawdown = -1",
    ).replace("max_order_notional = 1000.0", 'max_order_notional = 1000.0\nnetting = "pool"\n'
              "price_band_bps = 0\nmax_open_orders = 0", 1))  # fmt: skip
    assert "'reduce_only' or 'halted'" in errors["risk.drawdown_action"]
    assert "greater than or equal to 1" in errors["risk.order_rate.burst"]
    assert "greater than 0" in errors["risk.max_drawdown"]
    assert "'net', 'priority' or 'independent'" in errors["symbols[0].netting"]
    assert "greater than 0" in errors["symbols[0].price_band_bps"]
    assert "greater than 0" in errors["symbols[0].max_open_orders"]


def test_risk_and_netting_reload_live():
    old = load_config(DEFAULT)

    def edit(d):
        d["risk"]["max_drawdown"] = 10.0
        d["risk"]["order_rate"] = {"rate": 10.0, "burst": 20.0}
        d["trading"]["priority_window_s"] = 3.0
        d["symbols"][0]["netting"] = "independent"
        d["symbols"][1]["price_band_bps"] = 50.0
        d["symbols"][2]["max_open_orders"] = 3
        d["symbols"][3]["max_order_qty"] = 1.0
        d["hosts"][0]["populations"][0]["priority"] = 2

    changes = diff_config(old, _variant(old, edit))
    assert len(changes) == 8 and all(c.live for c in changes), [str(c) for c in changes]


def test_true_and_false_are_not_numbers(tmp_path):
    text = minimal(
        "status_interval_s = true", "ring_capacity = false", "[supervisor]", "max_restarts = true"
    )
    errors = errors_of(tmp_path, text)
    assert errors["status_interval_s"] == "expected a number, got true"
    assert errors["ring_capacity"] == "expected a number, got false"
    assert errors["supervisor.max_restarts"] == "expected a number, got true"
    assert load(tmp_path, minimal("[recorder]", "enabled = true")).recorder.enabled  # a bool


def test_params_errors_come_with_the_field_errors(tmp_path):
    """A population's params are checked across tables; they are reported together with
    the errors of the other tables, not once those are fixed."""
    text = minimal().replace("max_position = 5.0", "max_position = -5.0", 1)
    text += "[hosts.populations.params]\nqty = -1.0\n"  # host b's population
    errors = errors_of(tmp_path, text)
    assert "greater than 0" in errors["symbols[0].max_position"]
    assert "greater than 0 (got -1.0)" in errors["hosts[1].populations[0].params.qty"]
    # a population whose own keys are wrong is not second-guessed
    text = text.replace(
        "agents = 10\n[hosts.populations.params]", "agents = 0\n[hosts.populations.params]"
    )
    errors = errors_of(tmp_path, text)
    assert "hosts[1].populations[0].agents" in errors
    assert "hosts[1].populations[0].params.qty" not in errors


def test_the_longest_stop_fits_the_units_stop_timeout():
    """The hosts' checks, the intake's stop, every drain try at its longest and the rest's
    stop come in under TimeoutStopSec: systemd does not kill a stop that would finish."""
    import re

    from appliance.config import MAX_DRAIN_TIMEOUT_S
    from appliance.ops import install
    from appliance.runtime.children import STOP_TIMEOUT_S
    from appliance.runtime.positions import SETTLE_TIMEOUT_S
    from appliance.runtime.supervisor import DRAIN_ATTEMPTS

    unit = install.render_unit(install.Target())
    limit = float(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)[1])
    longest = SETTLE_TIMEOUT_S + 2 * STOP_TIMEOUT_S + DRAIN_ATTEMPTS * MAX_DRAIN_TIMEOUT_S
    assert longest < limit

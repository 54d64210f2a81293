"""The ccxt tables of the config: required where used, never holding keys, instruments
checked offline against a saved markets file."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config
from appliance.markets import make_exchange, save_markets
from tests.loopback import settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "live-sim.toml"


def test_the_example_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.feed.kind == "ccxt" and cfg.execution.venue == "ccxt"
    assert cfg.execution.ccxt.credentials_env == "DYNAMIND_SIM"


def errors_of(tmp_path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


def test_a_ccxt_kind_needs_its_table(tmp_path):
    text = EXAMPLE.read_text()
    cut = text[: text.index("[feed.ccxt]")] + text[text.index("[execution]") :]
    assert "feed.ccxt: required by feed kind 'ccxt'" in errors_of(tmp_path, cut)


@pytest.mark.parametrize("where", ["feed.ccxt.options", "execution.ccxt.urls"])
def test_keys_in_the_config_are_refused(tmp_path, where):
    table = f'[{where}]\napiKey = "k"\n'
    text = EXAMPLE.read_text().replace("[[hosts]]", table + "\n[[hosts]]", 1)
    assert "keys never go in the config" in errors_of(tmp_path, text)


@pytest.mark.parametrize("value", ["0", "-1.0", "7200"])
def test_the_safety_net_interval_is_checked(tmp_path, value):
    text = EXAMPLE.read_text().replace(
        "reconcile_interval_s = 5.0", f"reconcile_interval_s = {value}"
    )
    assert "execution.ccxt.reconcile_interval_s" in errors_of(tmp_path, text)


def test_instruments_are_checked_against_a_markets_file(make_sim, tmp_path):
    sim = make_sim("binance-us")
    rest = make_exchange(settings("binanceus", sim.port), pro=False)
    rest.load_markets()
    markets = tmp_path / "markets.json"
    save_markets(rest, markets)
    text = EXAMPLE.read_text().replace(
        'exchange = "binanceus"\n# Public',
        f'exchange = "binanceus"\nmarkets_file = "{markets}"\n# Public',
    )
    assert load_config_text(tmp_path, text).feed.ccxt.markets_file == markets
    bad = text.replace('name = "ZRX/USDT"', 'name = "ZRX/EUR"').replace(
        "lot_size = 0.1", "lot_size = 0.05"
    )
    msg = errors_of(tmp_path, bad)
    assert "symbols[0]: CRV/USDT: lot_size 0.05 is not a multiple" in msg
    assert "symbols[3]: 'ZRX/EUR' is not a market of binanceus" in msg
    assert sim.sim.requests["/api/v3/exchangeInfo"] == 1  # the check made no request


def load_config_text(tmp_path, text):
    path = tmp_path / "ok.toml"
    path.write_text(text)
    return load_config(path)

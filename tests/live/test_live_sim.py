"""`dynamind run` on config/examples/live-sim.toml against `dynamind exchange-sim`: ticks,
intents, orders and fills cross real processes, real ccxt and the loopback exchange, and the
journal agrees with what the exchange recorded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from appliance.markets import make_exchange
from tests.harness import (
    Appliance,
    assert_hosts_agree,
    assert_intents_accounted,
    assert_positions_equal_fills,
)
from tests.loopback import DATA, settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "examples" / "live-sim.toml"
SYMBOLS = ["CRV/USDT", "OMG/BUSD", "COMP/USDT", "ZRX/USDT"]


@pytest.fixture
def keys(monkeypatch):
    """Known fake keys, for the sim and the appliance alike, to search for afterwards."""
    key, secret = f"fake-key-{uuid.uuid4().hex}", f"fake-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("DYNAMIND_SIM_API_KEY", key)
    monkeypatch.setenv("DYNAMIND_SIM_SECRET", secret)
    return key, secret


@pytest.fixture
def exchange_sim(keys, tmp_path):
    log = (tmp_path / "exchange-sim.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.ops.cli", "exchange-sim", "--data",
         str(DATA / "binance-us"), "--port", "0", "--speed", "10", "--start-delay", "0.5"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
    )  # fmt: skip
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert m, f"exchange-sim did not start: {line!r}"
    yield int(m[1]), Path(log.name)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    log.close()


class LiveAppliance(Appliance):
    """The documented example config, pointed at this test's exchange-sim and folder."""

    def __init__(self, directory: Path, port: int) -> None:
        super().__init__(directory)
        text = EXAMPLE.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{port}")
        text = text.replace('instance = "dynamind-live-sim"', f'instance = "{self.instance}"')
        text = text.replace('"var/live-sim/journal.sqlite"', f'"{directory}/journal.sqlite"')
        text = text.replace('"var/live-sim/ccxt_venue.sqlite"', f'"{directory}/venue.sqlite"')
        text = text.replace(
            'wait = "block"',
            'wait = "block"\nlog_format = "json"\nstatus_interval_s = 0.5\n'
            "[supervisor]\nrestart_backoff_initial_s = 0.1\nmax_restarts = 20\n",
        )
        self.config.write_text(text)


def exchange_trades(port: int, key: str, secret: str) -> dict[str, tuple[str, float]]:
    """Every trade of the account at the exchange: trade id -> (client order id, amount)."""
    ex = make_exchange(settings("binanceus", port, secret), pro=False)
    ex.apiKey = key
    ex.load_markets()
    out = {}
    for symbol in SYMBOLS:
        orders = {o["id"]: o["clientOrderId"] for o in ex.fetch_orders(symbol)}
        for t in ex.fetch_my_trades(symbol, None, 1000):
            out[t["id"]] = (orders[t["order"]], t["amount"])
    return out


def assert_journal_matches_exchange(app: Appliance, port: int, keys) -> None:
    """Each exchange trade is journaled exactly once, under the order's client id."""
    at_exchange = exchange_trades(port, *keys)
    with app.journal() as db:
        rows = db.execute("SELECT venue_fill_id, venue_order_id, qty FROM venue_fills").fetchall()
    journaled = {fid: (cid, qty) for fid, cid, qty in rows}
    assert len(journaled) == len(rows), "a trade journaled twice"
    assert journaled.keys() == at_exchange.keys()
    for fid, (cid, qty) in at_exchange.items():
        assert journaled[fid][0] == cid and journaled[fid][1] == pytest.approx(qty)


def assert_no_secret_anywhere(paths: list[Path], keys) -> None:
    for path in paths:
        data = path.read_bytes()
        for value in keys:
            assert value.encode() not in data, f"{path.name} holds a key"


def audit(app: Appliance, port: int, keys, sim_log: Path) -> dict[int, int]:
    """What every live run must leave: each published intent journaled exactly once, hosts
    and execution agreeing, positions equal to fills, the journal equal to the exchange's
    trades, no key in any log or file, no segment left."""
    heads = assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert_positions_equal_fills(app)
    assert_journal_matches_exchange(app, port, keys)
    assert_no_secret_anywhere([app.log_path, sim_log, *app.dir.glob("*.sqlite*")], keys)
    assert app.leftovers() == []
    return heads


def test_live_sim_trades_and_reconciles_after_sigkill_of_execution(exchange_sim, keys, tmp_path):
    """Ticks, intents, orders and fills end to end; execution killed mid-run restarts,
    reconciles with the exchange by client id, and the audit holds."""
    port, sim_log = exchange_sim
    app = LiveAppliance(tmp_path, port)
    try:
        app.start().wait_ready()
        app.wait_for(lambda: app.counter("execution", "fills") > 5, what="fills")
        app.kill("execution")
        app.wait_restarted("execution", 2)
        done = app.counter("execution", "intents")
        app.wait_for(lambda: app.counter("execution", "intents") > done + 10, what="intents resume")
        assert app.stop() == 0, app.log_tail()
    finally:
        app.kill_all()
    heads = audit(app, port, keys, sim_log)
    assert sum(heads.values()) > 0
    with app.journal() as db:
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        sent = db.execute("SELECT count(*) FROM venue_orders WHERE state >= 3").fetchone()[0]
    assert sent > 0
    assert os.path.exists(tmp_path / "venue.sqlite")

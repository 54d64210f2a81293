"""Reload (SIGHUP) of a running appliance, one test per kind of change: applied by
restarting exactly the processes it concerns (with the new settings provably in use),
or refused whole. Live changes are in test_supervisor.py."""

from __future__ import annotations

import signal

import numpy as np

from appliance.model.records import TICK, TickKind
from appliance.shm import BroadcastRing
from tests.harness import Appliance, assert_hosts_agree, assert_intents_accounted

HOST_A_PARAMS = "qty = [0.002, 0.04]\nreject_backoff_s = 0.2"


def reload(app: Appliance, text: str) -> None:
    app.config.write_text(text)
    app.proc.send_signal(signal.SIGHUP)


def incarnations(app: Appliance) -> dict[str, int]:
    return {n: w["incarnation"] for n, w in app.workers().items() if n != "supervisor"}


def orders_between(app: Appliance, host: int, start_ns: int, end_ns: int) -> int:
    with app.journal() as db:
        return db.execute(
            "SELECT count(*) FROM orders WHERE host = ? AND created_ns >= ? AND created_ns < ?",
            (host, start_ns, end_ns),
        ).fetchone()[0]


def test_population_params_restart_their_host_with_the_new_params(tmp_path):
    """host-a is restarted with params under which its agents never trade (a warm-up longer
    than the run), then with trading params again: each time only host-a restarts, and its
    intents stop and resume with its params, while host-b trades throughout. Two planned
    restarts with max_restarts = 1: they do not count toward the restart-intensity limit."""
    app = Appliance(tmp_path, max_restarts=1)
    try:
        app.start().wait_ready()
        app.wait_for(lambda: app.counter("host-a", "intents") > 20, what="host-a trading")
        text = app.config.read_text()
        reload(app, text.replace(HOST_A_PARAMS, HOST_A_PARAMS + "\nwarmup = 100000000"))
        app.wait_for_log("applied by a restart of host-a: hosts[0].populations[0].params")
        app.wait_restarted("host-a", 2)
        quiet_from = app.workers()["host-a"]["started_ns"]
        ticks = app.counter("host-a", "ticks_in")
        app.wait_for(lambda: app.counter("host-a", "ticks_in") > ticks + 8000, what="host-a reads")
        # a seed is a restart too; the params are the original, trading ones again
        seeded = text.replace("agents = 60", "agents = 60\nseed = 11")
        reload(app, seeded)
        app.wait_for_log("applied by a restart of host-a: hosts[0].populations[0].seed: None -> 11")
        app.wait_restarted("host-a", 3)
        trading_from = app.workers()["host-a"]["started_ns"]
        intents = app.counter("host-a", "intents")
        app.wait_for(lambda: app.counter("host-a", "intents") > intents + 20, what="trading")
        assert incarnations(app) == {"execution": 1, "host-a": 3, "host-b": 1, "feed": 1}
        assert app.stop() == 0, app.log_tail()
    finally:
        app.kill_all()
    assert "halting" not in app.log_path.read_text()
    assert_intents_accounted(app)
    assert_hosts_agree(app)
    assert orders_between(app, 0, quiet_from, trading_from) == 0  # warm-up never ends
    assert orders_between(app, 1, quiet_from, trading_from) > 0  # the market did trade
    assert orders_between(app, 0, trading_from, 2**62) > 20


def test_feed_and_execution_settings_restart_exactly_those_two(app):
    """Trade ratio 1 (every tick a trade) and a new taker fee: the feed and execution
    restart, the hosts do not, and what they produce afterwards follows the new settings."""
    app.start().wait_ready()
    app.wait_for(lambda: app.counter("execution", "fills") > 20, what="fills")
    text = app.config.read_text()
    reload(
        app,
        text.replace("seed = 7", "seed = 7\ntrade_ratio = 1.0")
        + "\n[execution]\ntaker_fee_bps = 25.0\n",
    )
    app.wait_restarted("feed", 2)
    app.wait_restarted("execution", 2)
    restarted_ns = app.workers()["execution"]["started_ns"]
    ring = BroadcastRing.attach(app.instance, "ticks", TICK)
    reader = ring.reader("block", start="latest", slot=15)
    kinds = []
    try:
        while len(kinds) < 3000:
            if reader.wait(0.5):
                batch = reader.read(1024).copy()
                if reader.valid():
                    kinds += batch["kind"].tolist()
    finally:
        reader.close()
        ring.close()
    assert set(kinds) == {TickKind.TRADE}
    fills = app.counter("execution", "fills")
    app.wait_for(lambda: app.counter("execution", "fills") > fills + 20, what="new fills")
    assert incarnations(app) == {"execution": 2, "host-a": 1, "host-b": 1, "feed": 2}
    assert app.stop() == 0, app.log_tail()
    assert_intents_accounted(app)
    assert_hosts_agree(app)
    with app.journal() as db:
        rows = db.execute(
            "SELECT ts_ns >= ?, fee / (qty * price) FROM fills WHERE liquidity = 'venue'",
            (restarted_ns,),
        ).fetchall()
    rates = {after: np.array([r for a, r in rows if a == after]) for after in (0, 1)}
    assert len(rates[0]) and len(rates[1])
    assert np.allclose(rates[0], 10e-4) and np.allclose(rates[1], 25e-4)


def test_a_change_needing_the_whole_appliance_refuses_the_reload_whole(app):
    app.start().wait_ready()
    text = app.config.read_text()
    both = text.replace("ring_capacity = 16384", "ring_capacity = 32768").replace(
        "rate = 4000", "rate = 1000"
    )
    reload(app, both)
    app.wait_for_log("reload rejected")
    log = app.log_path.read_text()
    assert (
        "reload rejected, keeping the running config: nothing applied: ring_capacity: "
        "16384 -> 32768 (needs a restart of the whole appliance: it sizes shared-memory "
        "segments)" in log
    )
    assert "applied live" not in log and "feed rate now" not in log
    # The running config is still the old one: the same rate change alone is a change.
    reload(app, text.replace("rate = 4000", "rate = 1000"))
    app.wait_for_log("applied live: feed.rate: 4000.0 -> 1000.0")
    app.wait_for_log("feed rate now 1000")
    assert incarnations(app) == {"execution": 1, "host-a": 1, "host-b": 1, "feed": 1}
    assert app.stop() == 0, app.log_tail()

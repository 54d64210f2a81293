"""The ccxt feed against the loopback exchange: real ccxt.pro binance/binanceus clients, ticks
checked against the capture files."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from appliance.feeds.ccxt_feed import CcxtFeed, FeedError
from appliance.markets import make_exchange, save_markets
from appliance.model.instruments import Instrument
from appliance.model.records import TICK, TickKind
from tests.loopback import VENUES, capture_frames, settings

# (capture symbol id, ccxt symbol, tick, lot) of the four symbols of each capture
SYMBOLS = {
    "binance-us": [
        ("CRVUSDT", "CRV/USDT", 0.001, 0.1),
        ("COMPUSDT", "COMP/USDT", 0.01, 0.001),
        ("OMGBUSD", "OMG/BUSD", 0.0001, 0.01),
        ("ZRXUSDT", "ZRX/USDT", 0.0001, 1.0),
    ],
    "binance-spot": [
        ("NKNUSDT", "NKN/USDT", 0.0001, 1.0),
        ("BLZETH", "BLZ/ETH", 1e-8, 1.0),
        ("LRCBTC", "LRC/BTC", 1e-8, 1.0),
        ("RUNEEUR", "RUNE/EUR", 0.001, 0.1),
    ],
}


def feed_for(sim, exchange_id, rows, **kw) -> CcxtFeed:
    ex = make_exchange(settings(exchange_id, sim.port, **kw), pro=True)
    instruments = [Instrument(name, lot, tick) for _, name, tick, lot in rows]
    return CcxtFeed(ex, instruments, backoff=(0.05, 0.2))


async def collect(feed, until, timeout=60.0) -> np.ndarray:
    """Run the feed until ``until(ticks)`` holds; every tick it produced."""
    out = [np.zeros(0, TICK)]
    deadline = time.monotonic() + timeout
    await feed.start()
    try:
        async for batch in feed.batches():
            out.append(batch)
            ticks = np.concatenate(out)
            if until(ticks):
                return ticks
            assert time.monotonic() < deadline, f"gave up with {len(ticks)} ticks"
    finally:
        await feed.close()
    raise AssertionError("feed ended")


@pytest.mark.parametrize(("folder", "exchange_id"), VENUES)
def test_feed_writes_the_ticks_the_capture_holds(make_sim, folder, exchange_id):
    sim = make_sim(folder)
    rows = SYMBOLS[folder]
    ids = [r[0] for r in rows]
    frames = [f["data"] for f in capture_frames(folder)]
    agg = [d for d in frames if d.get("e") == "aggTrade"]
    books = [d for d in frames if "u" in d and "e" not in d]
    feed = feed_for(sim, exchange_id, rows)

    def done(ticks):
        last_quotes = {}
        for t in ticks[ticks["kind"] == TickKind.QUOTE]:
            last_quotes[int(t["symbol"])] = (t["bid"], t["ask"])
        want_last = {ids.index(d["s"]): (float(d["b"]), float(d["a"])) for d in books}
        n_trades = int((ticks["kind"] == TickKind.TRADE).sum())
        return (
            sim.sim.replay.state == "finished"
            and n_trades == len(agg)
            and (last_quotes == want_last)
        )

    ticks = asyncio.run(collect(feed, done))
    trades = ticks[ticks["kind"] == TickKind.TRADE]
    for s in range(len(rows)):  # per symbol: every trade, in order, as captured
        want = [  # sizes are float32 in a TICK
            (float(d["p"]), float(np.float32(d["q"])), -1 if d["m"] else 1)
            for d in agg
            if d["s"] == ids[s]
        ]
        mine = trades[trades["symbol"] == s]
        got = [(float(t["last_price"]), float(t["last_size"]), int(t["side"])) for t in mine]
        assert got == want, ids[s]
    quotes = ticks[ticks["kind"] == TickKind.QUOTE]
    for s in range(len(rows)):  # quotes: a subsequence of the captured bookTickers
        captured = iter([(float(d["b"]), float(d["a"])) for d in books if d["s"] == ids[s]])
        mine = quotes[quotes["symbol"] == s]
        assert all((float(q["bid"]), float(q["ask"])) in captured for q in mine), ids[s]
        assert (mine["bid_size"] > 0).all() and (mine["ask_size"] > 0).all()
    assert (ticks["recv_ns"] > 0).all() and (ticks["ts_ns"] > 0).all()
    assert not (ticks["kind"] == TickKind.GAP).any()
    # trade times are the exchange's (replay clock), never after we received them
    assert (trades["ts_ns"] <= trades["recv_ns"] + 5_000_000).all()


def test_a_dropped_connection_is_reconnected_and_the_gap_flagged(make_sim):
    sim = make_sim("binance-us", loop=True)
    rows = SYMBOLS["binance-us"]
    feed = feed_for(sim, "binanceus", rows)
    state = {"dropped_at": None}

    def until(ticks):
        if state["dropped_at"] is None and len(ticks) > 200:
            state["dropped_at"] = len(ticks)
            sim.loop.call_soon_threadsafe(lambda: sim.loop.create_task(sim.sim.market.drop()))
            return False
        if state["dropped_at"] is None:
            return False
        after = ticks[state["dropped_at"] :]
        gaps = after["kind"] == TickKind.GAP
        if not gaps.any():
            return False
        resumed = after[np.flatnonzero(gaps)[-1] + 1 :]
        return (resumed["kind"] == TickKind.QUOTE).sum() > 20

    ticks = asyncio.run(collect(feed, until))
    gaps = ticks[ticks["kind"] == TickKind.GAP]
    # every symbol flagged (once per connection that noticed the drop), no prices in a GAP
    assert set(gaps["symbol"].tolist()) == {0, 1, 2, 3}
    assert (gaps["bid"] == 0).all() and (gaps["ask"] == 0).all() and (gaps["last_price"] == 0).all()
    assert feed.gaps == len(gaps) and feed.reconnects >= len(gaps)
    first_gap = int(np.flatnonzero(ticks["kind"] == TickKind.GAP)[0])
    assert first_gap >= state["dropped_at"] - 256  # nothing flagged before the drop


def test_a_restarted_feed_begins_with_a_gap_for_every_symbol(make_sim):
    sim = make_sim("binance-us")
    feed = feed_for(sim, "binanceus", SYMBOLS["binance-us"])

    async def first():
        await feed.start(gap_first=True)
        try:
            async for batch in feed.batches():
                if len(batch):
                    return batch
        finally:
            await feed.close()

    batch = asyncio.run(first())
    assert batch["kind"][:4].tolist() == [TickKind.GAP] * 4
    assert batch["symbol"][:4].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("X", "LTC/EUR", 0.001, 0.1), "'LTC/EUR' is not a market of binanceus"),
        (("X", "CRV/USDT", 0.0005, 0.1), "CRV/USDT: tick_size 0.0005 is not a multiple"),
        (("X", "CRV/USDT", 0.001, 0.05), "CRV/USDT: lot_size 0.05 is not a multiple"),
    ],
)
def test_instruments_the_markets_refute_stop_the_feed_before_any_tick(make_sim, row, message):
    sim = make_sim("binance-us")
    feed = feed_for(sim, "binanceus", [SYMBOLS["binance-us"][1], row])

    async def start():
        try:
            await feed.start()
        finally:
            await feed.close()

    with pytest.raises(FeedError, match=message.replace("(", r"\(")):
        asyncio.run(start())
    assert sim.sim.market.conns == set() and sim.sim.replay.frames_sent == 0


def test_a_markets_file_spares_the_rest_call(make_sim, tmp_path):
    sim = make_sim("binance-us")
    rest = make_exchange(settings("binanceus", sim.port), pro=False)
    rest.load_markets()
    path = tmp_path / "markets.json"
    assert save_markets(rest, path) == 121
    assert sim.sim.requests["/api/v3/exchangeInfo"] == 1
    feed = feed_for(sim, "binanceus", SYMBOLS["binance-us"], markets_file=path)
    ticks = asyncio.run(collect(feed, lambda t: len(t) > 10))
    assert len(ticks) > 10
    assert sim.sim.requests["/api/v3/exchangeInfo"] == 1  # none for the feed

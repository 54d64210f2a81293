"""ReplayFeed: symbol mapping, fast and recorded pace, looping."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.feeds.replay import ReplayError, ReplayFeed
from appliance.feeds.tickfile import TickFileWriter
from appliance.model.records import TICK, TickKind

MS = 1_000_000


class FakeTime:
    """A monotonic clock that only sleeping advances."""

    def __init__(self) -> None:
        self.now = 0
        self.slept: list[float] = []

    def clock(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += round(seconds * 1e9)


def recording(path, ts_ns, symbols=("ETH/USDT", "BTC/USDT")):
    r = np.zeros(len(ts_ns), dtype=TICK)
    r["seq"] = np.arange(len(ts_ns)) + 100
    r["ts_ns"] = ts_ns
    r["bid"] = np.arange(len(ts_ns)) + 10.0
    r["ask"] = r["bid"] + 0.5
    r["symbol"] = np.arange(len(ts_ns)) % len(symbols)
    r["kind"] = 1
    with TickFileWriter(path, list(symbols)) as w:
        w.append(r)
    return r


def test_fast_pace_yields_views_and_write_maps_symbols(tmp_path):
    p = tmp_path / "r.dmt"
    rec = recording(p, 1_000 + np.arange(10))
    feed = ReplayFeed(p, ["BTC/USDT", "SOL/USDT", "ETH/USDT"], pace="fast", batch_size=4)
    assert list(feed.symbol_map) == [2, 0]
    batches = list(feed)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert all(np.shares_memory(b, feed.source.records) for b in batches)

    out = np.zeros(6, dtype=TICK)
    out["seq"] = 7
    feed.write(out, batches[0], now_ns=999)
    assert list(out["symbol"][:4]) == [2, 0, 2, 0]
    assert (out["recv_ns"][:4] == 999).all() and (out["seq"] == 7).all()
    assert (out["ts_ns"][:4] == rec["ts_ns"][:4]).all()
    assert (out["bid"][:4] == rec["bid"][:4]).all() and (out["kind"][4:] == 0).all()


def test_unknown_symbol_is_an_error(tmp_path):
    p = tmp_path / "r.dmt"
    recording(p, [1, 2], symbols=("BTC/USDT", "DOGE/USDT"))
    with pytest.raises(ReplayError, match=r"\['DOGE/USDT'\] are not in the config"):
        ReplayFeed(p, ["BTC/USDT"])


def test_recorded_pace_follows_the_timestamps(tmp_path):
    p = tmp_path / "r.dmt"
    ts = 5_000 * MS + np.array([0, 1, 2, 50, 51, 300, 301]) * MS
    recording(p, ts)
    t = FakeTime()
    feed = ReplayFeed(
        p,
        ["ETH/USDT", "BTC/USDT"],
        batch_size=100,
        max_wait_s=0.1,
        clock=t.clock,
        sleep=t.sleep,
    )
    seen = []
    for batch in feed:
        due = ts[0] + t.now
        # Nothing is handed out before its time, and everything due is.
        assert (batch["ts_ns"] <= due).all()
        seen.append((t.now // MS, len(batch)))
    # Gaps longer than max_wait_s yield empty batches so the worker can heartbeat.
    assert seen == [
        (0, 1),
        (1, 1),
        (2, 1),
        (50, 1),
        (51, 1),
        (151, 0),
        (251, 0),
        (300, 1),
        (301, 1),
    ]
    assert t.now == 301 * MS


def test_loop_shifts_event_time_forward(tmp_path):
    p = tmp_path / "r.dmt"
    recording(p, [1_000, 2_000, 3_000])
    feed = ReplayFeed(p, ["ETH/USDT", "BTC/USDT"], pace="fast", loop=True, batch_size=2)
    out = np.zeros(2, dtype=TICK)
    stamps = []
    for i, batch in enumerate(feed):
        feed.write(out, batch, now_ns=0)
        stamps.extend(out["ts_ns"][: len(batch)])
        if i == 5:
            break
    assert stamps == [1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 7_000, 8_000, 9_000]
    assert feed.passes == 2


def test_garbage_prices_are_dropped_counted_and_named(tmp_path, caplog):
    """NaN, negative, infinite, crossed and priceless-trade records never reach the ring;
    each is counted by reason and logged with where it is. A zero side is a one-sided
    quote, not garbage."""
    p = tmp_path / "r.dmt"
    r = np.zeros(8, dtype=TICK)
    r["seq"] = np.arange(8)
    r["ts_ns"] = 1_000 + np.arange(8)
    r["bid"], r["ask"], r["kind"] = 10.0, 10.5, TickKind.QUOTE
    r["bid"][1] = np.nan
    r["ask"][2] = -1.0
    r["bid"][3], r["ask"][3] = 11.0, 10.0  # crossed
    r["kind"][4], r["last_price"][4] = TickKind.TRADE, 0.0  # a trade at no price
    r["bid_size"][5] = np.inf
    r["bid"][6] = 0.0  # an empty bid side: sound
    with TickFileWriter(p, ["ETH/USDT"]) as w:
        w.append(r)
    feed = ReplayFeed(p, ["ETH/USDT"], pace="fast")
    with caplog.at_level("WARNING"):
        got = np.concatenate(list(feed))
    assert got["seq"].tolist() == [0, 6, 7]
    assert feed.bad == {"bid not finite": 1, "negative ask": 1, "crossed book": 1,
                        "trade without a price": 1, "bid_size not finite": 1}  # fmt: skip
    assert f"{p}: record seq 3 (ETH/USDT, ts_ns 1003) dropped: crossed book" in caplog.text
    assert "pass 1 dropped 5 records" in caplog.text

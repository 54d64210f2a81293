"""SyntheticFeed: deterministic, in place, and a plausible market."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from appliance.feeds.synthetic import SyntheticFeed
from appliance.model.records import TICK, Side, TickKind


@dataclass(frozen=True)
class Spec:
    start_price: float
    tick_size: float


SPECS = [Spec(65000.0, 0.01), Spec(3400.0, 0.01), Spec(150.0, 0.001), Spec(0.25, 0.0001)]


def generate(seed: int, batches: int = 8, size: int = 1024, **kw) -> np.ndarray:
    feed = SyntheticFeed(SPECS, seed=seed, **kw)
    out = np.zeros(batches * size, dtype=TICK)
    for b in range(batches):
        feed.fill(out[b * size : (b + 1) * size], now_ns=1_000 + b)
    return out


def test_same_seed_same_stream_other_seed_other_stream():
    a, b, c = generate(7), generate(7), generate(8)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_writes_in_place_every_field_but_seq():
    feed = SyntheticFeed(SPECS, seed=1)
    ring = np.zeros(300, dtype=TICK)
    ring["seq"] = np.arange(300)
    feed.fill(ring[100:200], now_ns=555)
    assert (ring["seq"] == np.arange(300)).all()
    assert (ring["kind"][:100] == 0).all() and (ring["kind"][200:] == 0).all()
    window = ring[100:200]
    assert (window["ts_ns"] == 555).all() and (window["recv_ns"] == 555).all()
    with pytest.raises(ValueError, match="TICK"):
        feed.fill(np.zeros(4, dtype=np.float64), now_ns=0)


def test_quotes_are_on_the_tick_grid_and_uncrossed():
    t = generate(3, spread_bps=2.0, volatility=1e-4)
    tick = np.array([s.tick_size for s in SPECS])[t["symbol"]]
    assert (t["bid"] < t["ask"]).all() and (t["bid"] > 0).all()
    for field in ("bid", "ask"):
        steps = t[field] / tick
        assert np.abs(steps - np.rint(steps)).max() < 1e-6
    spread_ticks = np.rint((t["ask"] - t["bid"]) / tick)
    assert spread_ticks.min() >= 1
    assert (t["bid_size"] > 0).all() and (t["ask_size"] > 0).all()
    # Prices stay near where they started over a few thousand ticks.
    start = np.array([s.start_price for s in SPECS])[t["symbol"]]
    assert np.abs(t["bid"] / start - 1).max() < 0.2


def test_trades_print_at_the_touch_and_quotes_carry_the_last_trade():
    t = generate(5, trade_ratio=0.3)
    trade = t["kind"] == TickKind.TRADE
    quote = t["kind"] == TickKind.QUOTE
    assert (trade | quote).all()
    assert 0.25 < trade.mean() < 0.35
    buy, sell = trade & (t["side"] == Side.BUY), trade & (t["side"] == Side.SELL)
    assert (buy | sell)[trade].all() and buy.any() and sell.any()
    assert (t["last_price"][buy] == t["ask"][buy]).all()
    assert (t["last_price"][sell] == t["bid"][sell]).all()
    assert (t["last_size"][trade] > 0).all()
    assert (t["side"][quote] == Side.NONE).all() and (t["last_size"][quote] == 0).all()
    # A quote's last_price is its symbol's latest trade (or the start price before any).
    last = {i: s.start_price for i, s in enumerate(SPECS)}
    for rec in t:
        sym = int(rec["symbol"])
        if rec["kind"] == TickKind.TRADE:
            last[sym] = rec["last_price"]
        assert rec["last_price"] == last[sym]


def test_every_symbol_gets_its_share():
    t = generate(9)
    counts = np.bincount(t["symbol"], minlength=len(SPECS))
    assert len(counts) == len(SPECS)
    assert (np.abs(counts / len(t) - 1 / len(SPECS)) < 0.03).all()


def test_resume_continues_from_the_ring():
    old = SyntheticFeed(SPECS, seed=4, volatility=1e-3)
    ring = np.zeros(1024, dtype=TICK)
    published = 0
    for size in (700, 700, 300):  # wraps the ring
        slots = np.arange(published, published + size) % len(ring)
        batch = np.zeros(size, dtype=TICK)
        old.fill(batch, now_ns=1)
        ring[slots] = batch
        published += size
    ring[published % len(ring)]["bid"] = 1e9  # a claimed, unpublished slot is not read

    new = SyntheticFeed(SPECS, seed=5)
    new.resume(ring, published)
    assert np.array_equal(new._last_trade, old._last_trade)
    # The quoted mid is within a few spreads (of ~1 bp) of the walk's exact mid.
    assert np.allclose(np.exp(new._log_mid), np.exp(old._log_mid), rtol=5e-4, atol=0)
    t = np.zeros(4, dtype=TICK)
    new.fill(t, now_ns=2)
    start = np.array([s.start_price for s in SPECS])
    assert (np.abs(t["bid"] / np.exp(old._log_mid)[t["symbol"]] - 1) < 0.05).all()
    assert not np.allclose(np.exp(old._log_mid), start)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="trade_ratio"):
        SyntheticFeed(SPECS, seed=0, trade_ratio=1.5)
    with pytest.raises(ValueError, match="at least one symbol"):
        SyntheticFeed([], seed=0)
    with pytest.raises(ValueError, match="positive"):
        SyntheticFeed([Spec(100.0, 0.0)], seed=0)

"""Raw Binance.US captures (tests/data/binance-us) as TICK records."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from appliance.feeds.captures import CaptureError, CaptureSource
from appliance.feeds.sources import SourceError, open_source
from appliance.model.records import Side, TickKind


def ticks(src: CaptureSource) -> np.ndarray:
    return np.concatenate(list(src.chunks()))


def test_symbols_and_instruments_come_from_the_capture(binance_us):
    src = CaptureSource(binance_us)
    assert src.symbols == ("CRV/USDT", "COMP/USDT", "OMG/BUSD", "ZRX/USDT")
    crv = src.instruments[0]
    assert (crv.venue_symbol, crv.tick_size, crv.lot_size) == ("CRVUSDT", 0.001, 0.1)
    assert src.instruments[1].tick_size == 0.01 and src.instruments[1].lot_size == 1e-5


def test_book_ticker_and_agg_trade_frames_become_ticks(binance_us):
    t = ticks(CaptureSource(binance_us))
    assert len(t) == 128 + 11  # bookTicker + aggTrade frames; depth and klines skipped
    assert (np.diff(t["recv_ns"]) >= 0).all() and (t["seq"] == np.arange(len(t))).all()
    first = t[0]  # 1633998276.480073: {"stream":"omgbusd@bookTicker", b 13.7664 B 30.28 ...}
    assert first["kind"] == TickKind.QUOTE and first["symbol"] == 2
    assert first["recv_ns"] == first["ts_ns"] == round(1633998276.480073 * 1e9)
    assert (first["bid"], first["ask"]) == (13.7664, 13.7952)
    assert first["bid_size"] == pytest.approx(30.28) and first["ask_size"] == pytest.approx(31.57)
    trades = t[t["kind"] == TickKind.TRADE]
    assert len(trades) == 11 and (trades["symbol"] == 2).all()
    tr = trades[0]  # 1633998288.39296: aggTrade p 13.8048 q 2.1 E 1633998288468 m false
    assert tr["last_price"] == 13.8048 and tr["last_size"] == pytest.approx(2.1)
    assert tr["side"] == Side.BUY  # the buyer was not the maker: the buyer took
    assert tr["ts_ns"] == 1633998288468 * 1_000_000
    assert tr["recv_ns"] == round(1633998288.39296 * 1e9)
    before = t[(t["recv_ns"] < tr["recv_ns"]) & (t["symbol"] == 2)][-1]
    assert (tr["bid"], tr["ask"]) == (before["bid"], before["ask"])  # the quote it met


def test_depth_option_keeps_the_book(binance_us):
    plain = ticks(CaptureSource(binance_us))
    deep = ticks(CaptureSource(binance_us, depth=True))
    assert len(deep) > len(plain)
    ok = (deep["bid"] > 0) & (deep["ask"] > 0)
    assert (deep["bid"][ok] < deep["ask"][ok]).all()


def test_open_source_recognises_captures(binance_us):
    assert isinstance(open_source(binance_us), CaptureSource)


def test_broken_capture_names_file_and_line(tmp_path, binance_us):
    bad = tmp_path / "cap"
    shutil.copytree(binance_us, bad)
    lines = (bad / "stream.ws").read_text().splitlines()
    lines[3] = "garbage without a time"
    (bad / "stream.ws").write_text("\n".join(lines))
    with pytest.raises(CaptureError, match=r"stream.ws:4: expected 'RECV_TS: FRAME'"):
        ticks(CaptureSource(bad))
    (bad / "exchangeInfo.http").write_text("nonsense\n")
    with pytest.raises(SourceError, match=r"exchangeInfo\.http:1"):
        open_source(bad)

"""Parquet tick history: round trip, partitions, rotation, gaps, the tools that read it."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.feeds.parquet import (
    HistoryError,
    ParquetDataset,
    ParquetRecorder,
    file_meta,
)
from appliance.feeds.replay import ReplayFeed
from appliance.feeds.sources import open_source
from appliance.model.instruments import Instrument
from appliance.model.records import TICK, Side, TickKind

DAY = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
SYMS = [Instrument("BTC/USDT", 1e-5, 0.01), Instrument("ETH/USDT", 1e-4, 0.01)]


def make_ticks(n: int, first_seq: int = 0, t0: int = T0, step: int = 10**9) -> np.ndarray:
    t = np.zeros(n, TICK)
    t["seq"] = np.arange(first_seq, first_seq + n)
    t["recv_ns"] = t0 + np.arange(n) * step
    t["ts_ns"] = t["recv_ns"] - 5
    t["symbol"] = np.arange(n) % 2
    t["bid"] = 100.0 + np.arange(n)
    t["ask"] = t["bid"] + 0.5
    t["last_price"] = t["bid"]
    t["bid_size"], t["ask_size"] = 1.5, 2.5
    t["kind"] = np.where(np.arange(n) % 3 == 0, TickKind.TRADE, TickKind.QUOTE)
    t["side"] = np.where(t["kind"] == TickKind.TRADE, Side.SELL, Side.NONE)
    t["last_size"] = np.where(t["kind"] == TickKind.TRADE, 0.25, 0.0)
    return t


def record(root, batches, **kw) -> ParquetRecorder:
    r = ParquetRecorder(root, SYMS, {"kind": "synthetic", "seed": 1}, **kw)
    for b in batches:
        r.append(b)
    r.close()
    return r


def test_round_trip_partitions_and_metadata(tmp_path):
    # Two days (the second batch starts 1 day later), two symbols: four files.
    a, b = make_ticks(500), make_ticks(300, first_seq=500, t0=T0 + DAY)
    r = record(tmp_path / "h", [a, b], row_group=64)
    names = sorted(p.relative_to(tmp_path / "h").parent.as_posix() for p in r.files_written)
    assert names == [
        "date=2023-11-14/market=BTC-USDT", "date=2023-11-14/market=ETH-USDT",
        "date=2023-11-15/market=BTC-USDT", "date=2023-11-15/market=ETH-USDT",
    ]  # fmt: skip
    assert not list((tmp_path / "h").glob("**/*.tmp"))
    meta = file_meta(r.files_written[0])
    eth = meta["instruments"][1]
    assert (eth["name"], eth["tick_size"], eth["lot_size"]) == ("ETH/USDT", 0.01, 1e-4)
    assert Instrument(**eth) == SYMS[1]  # the whole instrument, read back as it was
    assert meta["feed"] == {"kind": "synthetic", "seed": 1} and meta["gaps"] == []
    back = np.concatenate(list(ParquetDataset(tmp_path / "h").chunks()))
    assert (back == np.concatenate([a, b])).all()  # every field, bit for bit


def test_gaps_are_recorded(tmp_path):
    r = record(tmp_path / "h", [make_ticks(100), make_ticks(50, first_seq=130)])
    assert r.gaps[0]["first_seq"] == 100 and r.gaps[0]["count"] == 30
    ds = ParquetDataset(tmp_path / "h")
    assert {g["first_seq"] for g in ds.gaps} == {100}


def test_a_feed_gap_is_noted_and_recording_goes_on(tmp_path):
    """A GAP record of the feed (a lost connection) is no tick: no row, a gap in the
    metadata naming its symbol, and the ticks after it are recorded as before."""
    ticks = make_ticks(40)
    ticks[17] = np.zeros(1, TICK)[0]
    ticks[17]["seq"], ticks[17]["symbol"], ticks[17]["kind"] = 17, 1, TickKind.GAP
    ticks[17]["recv_ns"] = ticks[16]["recv_ns"]
    r = record(tmp_path / "h", [ticks, make_ticks(10, first_seq=40)])
    assert [(g["first_seq"], g["count"], g["reason"]) for g in r.gaps] == [
        (17, 1, "the feed lost its source for ETH/USDT")
    ]
    back = np.concatenate(list(ParquetDataset(tmp_path / "h").chunks()))
    assert sorted(back["seq"].tolist()) == [s for s in range(50) if s != 17]
    assert {g["first_seq"] for g in ParquetDataset(tmp_path / "h").gaps} == {17}


def test_rotation_by_size_and_by_time(tmp_path):
    batches = [make_ticks(256, first_seq=i * 256) for i in range(4)]
    big = record(tmp_path / "size", batches, row_group=256, rotate_bytes=1)
    assert len(big.files_written) == 8  # every batch its own file per symbol
    now = [0.0]
    r = ParquetRecorder(tmp_path / "time", SYMS, {}, rotate_s=10, flush_s=0, clock=lambda: now[0])
    r.append(make_ticks(10))
    r.poll()
    r.sync()  # files opened at time 0
    now[0] = 11.0
    r.poll()  # nothing pending: the open files are checked for age
    r.append(make_ticks(10, first_seq=10, t0=T0 + 10 * 10**9))
    r.close()
    files = sorted((tmp_path / "time").glob("**/*.parquet"))
    assert len(files) == 4  # each symbol's first file aged out, then the rest
    back = np.concatenate(list(ParquetDataset(tmp_path / "time").chunks()))
    assert (back["seq"] == np.arange(20)).all()


def test_time_window_and_replay(tmp_path):
    record(tmp_path / "h", [make_ticks(100)])
    ds = ParquetDataset(tmp_path / "h")
    part = np.concatenate(list(ds.chunks(since_ns=T0 + 10 * 10**9, until_ns=T0 + 20 * 10**9)))
    assert list(part["seq"]) == list(range(10, 20))
    feed = ReplayFeed(tmp_path / "h", ["ETH/USDT", "SOL/USDT", "BTC/USDT"], pace="fast",
                      since_ns=T0 + 95 * 10**9)  # fmt: skip
    out = np.zeros(5, TICK)
    (batch,) = list(feed)
    feed.write(out, batch, None)
    assert list(out["symbol"]) == [0, 2, 0, 2, 0]  # ETH is index 0 of this config
    assert (out["recv_ns"] == T0 + np.arange(95, 100) * 10**9).all()


def test_pandas_polars_duckdb_read_it(tmp_path):
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    root = tmp_path / "h"
    record(root, [make_ticks(10)])
    df = pd.read_parquet(root)
    assert len(df) == 10 and set(df["symbol"]) == {"BTC/USDT", "ETH/USDT"}
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]" and set(df["kind"]) == {"quote", "trade"}
    frame = pl.read_parquet(root / "**/*.parquet", hive_partitioning=True)
    assert frame.height == 10 and frame["bid"].sum() == sum(100.0 + i for i in range(10))
    rows = duckdb.sql(
        f"SELECT symbol, count(*) FROM read_parquet('{root}/**/*.parquet', "
        "hive_partitioning = true) WHERE kind = 'trade' GROUP BY symbol ORDER BY symbol"
    ).fetchall()
    assert rows == [("BTC/USDT", 2), ("ETH/USDT", 2)]  # trades are every third tick


def test_not_history_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(HistoryError, match=r"no \.parquet files"):
        ParquetDataset(tmp_path / "empty")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")
    with pytest.raises(Exception, match="without dynamind tick metadata"):
        open_source(tmp_path)


def test_a_steady_trickle_is_written_without_waiting_for_a_full_row_group(tmp_path):
    now = [0.0]
    r = ParquetRecorder(tmp_path / "h", SYMS, {}, flush_s=1.0, clock=lambda: now[0])
    r.append(make_ticks(10))
    now[0] = 1.5  # a reader that never idles never calls poll()
    r.append(make_ticks(10, first_seq=10, t0=T0 + 10 * 10**9))
    r.sync()
    assert r.rows_written == 20
    r.close()

"""Tick files: round trip, append, and every way a file can be bad."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from appliance.feeds.tickfile import (
    MAGIC,
    TickFileError,
    TickFileReader,
    TickFileWriter,
    read_header,
)
from appliance.model.records import TICK

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def records(n: int, start: int = 0) -> np.ndarray:
    r = np.zeros(n, dtype=TICK)
    r["seq"] = np.arange(start, start + n)
    r["ts_ns"] = 1_000 + r["seq"]
    r["bid"] = 100.0 + r["seq"]
    r["ask"] = r["bid"] + 1
    r["symbol"] = r["seq"] % 2
    r["kind"] = 1
    return r


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "sub" / "ticks.dmt"
    with TickFileWriter(p, SYMBOLS) as w:
        w.append(records(10))
        w.append(records(5, start=10)[::-1][::-1])
    return p


def test_round_trip_zero_copy(path):
    reader = TickFileReader(path)
    assert reader.symbols == tuple(SYMBOLS)
    assert len(reader) == 15
    assert reader.records.tobytes() == records(15).tobytes()
    assert isinstance(reader.records, np.memmap)
    assert [len(b) for b in reader.batches(6)] == [6, 6, 3]
    assert read_header(path).header_len % 64 == 0


def test_append_to_existing_file_and_symbol_mismatch(path):
    with TickFileWriter(path, SYMBOLS) as w:
        assert w.records == 15 and w.dropped_bytes == 0
        w.append(records(3, start=15))
    assert TickFileReader(path).records.tobytes() == records(18).tobytes()
    with pytest.raises(TickFileError, match="cannot append records for"):
        TickFileWriter(path, ["ETH/USDT", "BTC/USDT"])


def test_empty_file_has_no_records(tmp_path):
    p = tmp_path / "empty.dmt"
    TickFileWriter(p, SYMBOLS).close()
    assert len(TickFileReader(p)) == 0


def test_truncated_last_record_is_detected_and_cut_on_append(path):
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 10)
    header_len = read_header(path).header_len
    with pytest.raises(TickFileError, match=rf"{path}: offset {header_len + 14 * 64}: truncated"):
        TickFileReader(path)
    with TickFileWriter(path, SYMBOLS) as w:
        assert w.dropped_bytes == 54 and w.records == 14
    assert len(TickFileReader(path)) == 14


def test_zero_filled_tail_is_corrupt_and_cut_on_append(path):
    with path.open("ab") as f:
        f.write(bytes(64 * 3))
    offset = read_header(path).header_len + 15 * 64
    with pytest.raises(TickFileError, match=rf"offset {offset}: corrupt record 15"):
        TickFileReader(path)
    with TickFileWriter(path, SYMBOLS) as w:
        assert w.dropped_bytes == 3 * 64
    assert len(TickFileReader(path)) == 15


@pytest.mark.parametrize(
    ("field", "value"), [("kind", 9), ("side", 5), ("symbol", 2), ("ts_ns", 0)]
)
def test_corrupt_record_names_its_offset(path, field, value):
    header_len = read_header(path).header_len
    r = records(1, start=7)
    r[field] = value
    with path.open("r+b") as f:
        f.seek(header_len + 7 * 64)
        f.write(r.tobytes())
    with pytest.raises(TickFileError, match=rf"{path}: offset {header_len + 7 * 64}: corrupt"):
        TickFileReader(path)
    assert len(TickFileReader(path, validate=False)) == 15


def test_bad_magic(path):
    data = path.read_bytes()
    path.write_bytes(b"NOTTICKS" + data[8:])
    with pytest.raises(TickFileError, match=rf"{path}: offset 0: bad magic"):
        TickFileReader(path)


def test_short_file_and_bad_version(tmp_path, path):
    short = tmp_path / "short.dmt"
    short.write_bytes(MAGIC)
    with pytest.raises(TickFileError, match="offset 0: file too short"):
        TickFileReader(short)
    data = bytearray(path.read_bytes())
    data[8:12] = struct.pack("<I", 99)
    path.write_bytes(bytes(data))
    with pytest.raises(TickFileError, match="offset 8: format version 99"):
        TickFileReader(path)


def test_dtype_mismatch(tmp_path):
    other = np.dtype({"names": ["seq"], "formats": ["<u8"], "offsets": [0], "itemsize": 64})
    body = orjson.dumps(
        {
            "dtype": {"names": ["seq"], "formats": ["<u8"], "offsets": [0], "itemsize": 64},
            "symbols": SYMBOLS,
            "created_ns": 1,
        }
    )
    header = (struct.pack("<8sII", MAGIC, 1, 256) + body).ljust(256, b"\0")
    p = tmp_path / "other.dmt"
    p.write_bytes(header + np.zeros(2, other).tobytes())
    with pytest.raises(TickFileError, match=r"offset 16: record dtype .* does not match"):
        TickFileReader(p)


def test_append_refuses_other_records(tmp_path):
    with TickFileWriter(tmp_path / "x.dmt", SYMBOLS) as w, pytest.raises(ValueError):
        w.append(np.zeros(3))

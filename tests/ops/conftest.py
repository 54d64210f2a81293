"""Journals that cannot be read: bytes that are no SQLite file, and a journal whose tables
are damaged while its header and schema still read (so it opens, and fails later)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from appliance.trading.journal import Journal


@pytest.fixture
def garbage_journal(tmp_path) -> Path:
    path = tmp_path / "garbage.sqlite"
    path.write_bytes(np.random.default_rng(7).bytes(64 * 1024))
    return path


@pytest.fixture
def damaged_journal(tmp_path) -> Path:
    """A real journal (one run, its layout recorded) whose orders and fills root pages are
    zeroed: it opens, its layout reads, its orders and fills do not."""
    path = tmp_path / "damaged.sqlite"
    j = Journal(path, synchronous="NORMAL")
    j.begin_run(symbols=["BTC/USDT", "ETH/USDT"], lots=[0.00001, 0.0001], agents={(0, 0): 60})
    j.close()  # the last connection: the WAL is folded into the file
    conn = sqlite3.connect(path)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = [r for (r,) in conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name IN ('orders', 'fills')"
    )]  # fmt: skip
    conn.close()
    with path.open("r+b") as f:
        for root in roots:
            f.seek((root - 1) * page)
            f.write(b"\x00" * page)  # no b-tree page type: SQLite's "malformed" on a read
    return path

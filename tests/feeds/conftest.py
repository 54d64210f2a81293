"""Fixtures of the feeds tests: the real captures shipped in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture
def binance_us() -> Path:
    return DATA / "binance-us"

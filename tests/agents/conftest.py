"""Shared factories of the agents tests: tick and report records."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.model.records import REPORT, TICK, RejectReason, ReportKind


def make_ticks(symbols, mids, recv_ns: int = 1, spread: float = 0.02) -> np.ndarray:
    """TICK records with the given symbols and mid prices (bid/ask around them)."""
    out = np.zeros(len(symbols), dtype=TICK)
    out["symbol"] = symbols
    out["bid"] = np.asarray(mids, dtype=float) - spread / 2
    out["ask"] = np.asarray(mids, dtype=float) + spread / 2
    out["recv_ns"] = recv_ns + np.arange(len(symbols))
    out["kind"] = 1
    return out


def make_report(agent, kind: ReportKind, side: int, qty=0.0, final=True,
                reason=RejectReason.NONE, ts_ns=0) -> np.ndarray:  # fmt: skip
    r = np.zeros(1, dtype=REPORT)
    r["agent"], r["kind"], r["side"], r["fill_qty"] = agent, kind, side, qty
    r["fill_price"], r["final"], r["reason"], r["ts_ns"] = 100.0, final, reason, ts_ns
    return r


@pytest.fixture
def random_ticks():
    """Interleaved ticks of symbols 0..2 (2 untraded by most tests), with a bad quote."""
    rng = np.random.default_rng(1)
    n = 3000
    t = make_ticks(rng.integers(0, 3, n), 100 + np.cumsum(rng.normal(0, 0.05, n)))
    t["bid"][17] = np.nan
    return t

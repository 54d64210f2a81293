"""Builders of TICK / INTENT batches for the execution-side tests."""

from __future__ import annotations

import numpy as np

from appliance.model.records import INTENT, TICK, OrderType, Side, TickKind


def quotes(
    symbol: int | list[int],
    bid: float | list[float],
    ask: float | list[float],
    size: float = 10.0,
) -> np.ndarray:
    """QUOTE ticks, one per symbol given (lists broadcast together)."""
    sym = np.atleast_1d(symbol)
    t = np.zeros(len(sym), TICK)
    t["symbol"] = sym
    t["bid"], t["ask"] = bid, ask
    t["bid_size"] = t["ask_size"] = size
    t["kind"] = TickKind.QUOTE
    return t


def trade(symbol: int, price: float, bid: float, ask: float, size: float = 1.0) -> np.ndarray:
    t = quotes(symbol, bid, ask)
    t["kind"] = TickKind.TRADE
    t["last_price"] = price
    t["last_size"] = size
    t["side"] = Side.BUY
    return t


def intents(rows: list[dict]) -> np.ndarray:
    """INTENT records from dicts; defaults: host 0, population 0, agent 0, symbol 0,
    BUY MARKET qty 1, seq = position in the list."""
    out = np.zeros(len(rows), INTENT)
    for i, r in enumerate(rows):
        out[i]["seq"] = r.get("seq", i)
        out[i]["host"] = r.get("host", 0)
        out[i]["population"] = r.get("population", 0)
        out[i]["agent"] = r.get("agent", 0)
        out[i]["symbol"] = r.get("symbol", 0)
        out[i]["side"] = r.get("side", Side.BUY)
        out[i]["order_type"] = r.get("order_type", OrderType.MARKET)
        out[i]["qty"] = r.get("qty", 1.0)
        out[i]["limit_price"] = r.get("limit_price", 0.0)
        out[i]["created_ns"] = r.get("created_ns", 1)
    return out

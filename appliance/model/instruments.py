"""Instruments: what every layer knows about a tradeable symbol."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of the instrument table. Its position in the table is the symbol index that
    ticks, intents, reports and the journal carry."""

    name: str  # ccxt unified symbol, e.g. "BTC/USDT"
    tick_size: float  # price grid, quote currency
    lot_size: float  # quantity grid, base units
    max_position: float  # per agent, base units (pre-trade risk)
    max_order_notional: float  # per order, quote currency (pre-trade risk)
    start_price: float = 0.0  # where the synthetic feed starts its walk

"""Instruments: what every layer knows about a tradeable symbol."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Instrument:
    """One row of the instrument table. Its position in the table is the symbol index that
    ticks, intents, reports and the journal carry.

    What trading needs of it now is its name and grids; the venue, market type, contract
    size and settlement say what a position in it is worth, for venues and contract types
    beyond one spot venue (today every instrument is spot on the one configured venue).
    """

    name: str  # ccxt unified symbol: "BTC/USDT", or "BTC/USDT:USDT" for a perpetual
    lot_size: float  # quantity grid, base units (contracts for a derivative)
    tick_size: float = 0.0  # price grid, quote currency (0: not known, e.g. from a journal)
    venue: str = ""  # the venue that trades it ("": the one configured venue)
    venue_symbol: str = ""  # the venue's own id for it, e.g. "CRVUSDT" ("": not known)
    market_type: str = "spot"  # ccxt's market type: spot, swap, future
    contract_size: float = 1.0  # base units per contract (1 for spot)
    inverse: bool = False  # settled in the base currency (e.g. COIN-M), else linear

    @property
    def base(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def quote(self) -> str:
        return self.name.split("/", 1)[1].split(":", 1)[0]

    @property
    def settle(self) -> str:
        """The currency profits and losses are paid in."""
        _, _, settle = self.name.partition(":")
        return settle or self.quote

"""Synthetic market data: a multi-symbol random walk with quotes and trades.

Each call to ``fill`` generates one batch for all symbols: symbols are drawn uniformly per
tick; each symbol's log mid walks by a normal step per tick of that symbol; bid/ask sit on
the tick grid around the mid with a spread of ``spread_bps`` (at least one tick) times a
noise factor; top-of-book sizes are lognormal around a fixed quote-currency notional (size
and spread noise are windows of precomputed pools); a ``trade_ratio`` fraction of ticks
are TRADEs at the ask (buyer aggressor) or the bid (seller aggressor), the rest QUOTEs
that carry the symbol's last trade price. A seed gives the same stream.

The random numbers of a batch are drawn with NumPy in three calls; one compiled loop
(numba) then walks the ticks in order and writes each record in place. A batch thus costs
a few microseconds plus tens of nanoseconds per tick, so a paced feed can write small
batches (low latency) as cheaply as large ones (throughput).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numba import njit

from appliance.model.records import TICK, Side, TickKind

# Typical top-of-book depth, in quote currency, that lognormal sizes are centred on.
BOOK_NOTIONAL = 20_000.0
# Typical trade size as a fraction of the book depth.
TRADE_FRACTION = 0.05
# Log-normal sigma of sizes and of the spread's noise factor.
SIZE_SIGMA = 1.0
SPREAD_SIGMA = 0.3
# Values in each precomputed noise pool (see fill).
POOL_SIZE = 1 << 16


class SymbolSpec(Protocol):
    """What the feed needs of a symbol (a config SymbolConfig fits)."""

    @property
    def start_price(self) -> float: ...
    @property
    def tick_size(self) -> float: ...


class SyntheticFeed:
    """Generates TICK batches in place into caller-given arrays (see module docstring)."""

    def __init__(
        self,
        symbols: Sequence[SymbolSpec],
        seed: int,
        trade_ratio: float = 0.2,
        volatility: float = 2e-4,
        spread_bps: float = 1.0,
    ) -> None:
        if not symbols:
            raise ValueError("the synthetic feed needs at least one symbol")
        if not 0.0 <= trade_ratio <= 1.0:
            raise ValueError(f"trade_ratio must be within [0, 1], got {trade_ratio}")
        if volatility < 0 or spread_bps < 0:
            raise ValueError("volatility and spread_bps must be non-negative")
        start = np.array([s.start_price for s in symbols], dtype=np.float64)
        tick = np.array([s.tick_size for s in symbols], dtype=np.float64)
        if (start <= 0).any() or (tick <= 0).any():
            raise ValueError("start prices and tick sizes must be positive")
        self.n_symbols = len(symbols)
        self.trade_ratio = trade_ratio
        self.volatility = volatility
        self.spread_bps = spread_bps
        self._rng = np.random.default_rng(seed)
        self._tick = tick
        # Prices are (integer ticks) * mul / div. For decimal tick sizes (0.01, 0.5, ...)
        # dividing by 1/tick yields the double nearest the decimal price (60000.01, not
        # 60000.010000000002); other tick sizes multiply.
        inverse = np.round(1.0 / tick)
        decimal = np.isclose(inverse * tick, 1.0, rtol=0, atol=1e-12) & (tick <= 1.0)
        self._div = np.where(decimal, inverse, 1.0)
        self._mul = np.where(decimal, 1.0, tick)
        self._log_mid = np.log(start)
        self._last_trade = start.copy()
        self._size_noise = np.exp(SIZE_SIGMA * self._rng.standard_normal(POOL_SIZE))
        self._spread_noise = np.exp(SPREAD_SIGMA * self._rng.standard_normal(POOL_SIZE))

    def resume(self, ring: np.ndarray, published: int) -> None:
        """Continue each symbol's walk from its newest tick in a ring, so a restarted feed
        picks up the prices where its predecessor stopped instead of jumping back.

        ``ring`` is the ring's whole record array and ``published`` its publish cursor
        (record ``s`` lives in slot ``s % len(ring)``); only published records are read.
        Symbols with no tick in the ring keep their start price.
        """
        if ring.dtype != TICK:
            raise ValueError(f"expected TICK records, got {ring.dtype}")
        n = min(published, len(ring))
        if n <= 0:
            return
        recent = ring[np.arange(published - n, published) % len(ring)]
        sym = recent["symbol"].astype(np.intp)
        bid, ask = recent["bid"], recent["ask"]
        usable = np.flatnonzero((sym < self.n_symbols) & (bid > 0) & (ask > bid))
        newest = np.full(self.n_symbols, -1, dtype=np.intp)
        np.maximum.at(newest, sym[usable], usable)
        seen = newest >= 0
        last = recent[newest[seen]]
        self._log_mid[seen] = np.log(0.5 * (last["bid"] + last["ask"]))
        self._last_trade[seen] = last["last_price"]

    def fill(self, out: np.ndarray, now_ns: int) -> None:
        """Write ``len(out)`` ticks into ``out`` (TICK records), every field but ``seq``."""
        if out.dtype != TICK:
            raise ValueError(f"expected TICK records, got {out.dtype}")
        n = len(out)
        if n == 0:
            return
        rng = self._rng
        # One uniform draw picks the symbol, another the kind and aggressor; the steps of
        # the walk; offsets into the noise pools (spread, bid size, ask size, trade size).
        uniform = rng.random((2, n))
        steps = rng.standard_normal(n) * self.volatility
        offsets = rng.integers(0, POOL_SIZE, size=4)
        _fill(
            out, uniform[0], uniform[1], steps, offsets, self._log_mid, self._last_trade,
            self._tick, self._mul, self._div, self.spread_bps * 1e-4, self.trade_ratio,
            self._spread_noise, self._size_noise, now_ns,
        )  # fmt: skip


@njit(cache=True)
def _fill(out, pick, kind, steps, offsets, log_mid, last_trade, tick, mul, div, spread_frac,
          trade_ratio, spread_noise, size_noise, now_ns):  # fmt: skip
    """The ticks of one batch, in order (see the module doc); updates the walk's state."""
    n_sym = len(log_mid)
    pool = len(size_noise)
    for i in range(len(out)):
        s = min(int(pick[i] * n_sym), n_sym - 1)
        log_mid[s] += steps[i]
        mid_ticks = np.exp(log_mid[s]) / tick[s]
        spread = max(1.0, np.rint(mid_ticks * spread_frac * spread_noise[(i + offsets[0]) % pool]))
        # Keep the bid at least one tick above zero however far the walk wanders.
        bid_ticks = max(1.0, np.floor(mid_ticks - 0.5 * spread))
        bid = bid_ticks * mul[s] / div[s]
        ask = (bid_ticks + spread) * mul[s] / div[s]
        trade = kind[i] < trade_ratio
        buy = kind[i] < 0.5 * trade_ratio
        if trade:
            last_trade[s] = ask if buy else bid
        size_scale = BOOK_NOTIONAL / (mid_ticks * tick[s])
        r = out[i]
        r.ts_ns = now_ns
        r.recv_ns = now_ns
        r.bid = bid
        r.ask = ask
        r.last_price = last_trade[s]
        r.bid_size = size_scale * size_noise[(i + offsets[1]) % pool]
        r.ask_size = size_scale * size_noise[(i + offsets[2]) % pool]
        r.last_size = (
            TRADE_FRACTION * size_scale * size_noise[(i + offsets[3]) % pool] if trade else 0.0
        )
        r.symbol = s
        r.kind = TickKind.TRADE if trade else TickKind.QUOTE
        r.side = (Side.BUY if buy else Side.SELL) if trade else Side.NONE

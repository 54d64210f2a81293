"""Synthetic market data: a multi-symbol random walk with quotes and trades.

Each call to ``fill`` generates one batch for all symbols at once (no Python loop per
tick or per symbol): symbols are drawn uniformly per tick; each symbol's log mid walks by
a normal step per tick of that symbol; bid/ask sit on the tick grid around the mid with
a spread of ``spread_bps`` (at least one tick) times a noise factor; top-of-book sizes are
lognormal around a fixed quote-currency notional (size and spread noise are windows of
precomputed pools); a ``trade_ratio`` fraction of ticks are TRADEs at the ask (buyer
aggressor) or the bid (seller aggressor), the rest QUOTEs that carry the symbol's last
trade price. A seed gives the same stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

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
        s_count = self.n_symbols
        rows = np.arange(n)
        # One uniform draw picks the symbol, another the kind and aggressor: a trade when
        # below trade_ratio, a buy when below half of it (even odds within trades).
        uniform = rng.random((2, n))
        sym = (uniform[0] * s_count).astype(np.intp)
        is_trade = uniform[1] < self.trade_ratio
        buy = uniform[1] < 0.5 * self.trade_ratio
        # Noise of sizes and spreads comes from windows of precomputed pools at random
        # offsets: drawing and exponentiating it afresh per tick would cost most of fill.
        noise = rng.integers(0, POOL_SIZE, size=4)

        # Per-symbol random walk: a cumulative sum along each row of an (S, n) grid that
        # holds each tick's step in its symbol's row (flat index sym * n + tick).
        flat = sym * n + rows
        grid = np.zeros(s_count * n)
        grid[flat] = rng.standard_normal(n) * self.volatility
        grid = grid.reshape(s_count, n)
        np.cumsum(grid, axis=1, out=grid)
        log_mid = self._log_mid[sym] + grid.reshape(-1)[flat]
        self._log_mid = self._log_mid + grid[:, -1]

        tick = self._tick[sym]
        mid_ticks = np.exp(log_mid) / tick
        spread_noise = np.take(self._spread_noise, rows + noise[0], mode="wrap")
        spread = np.maximum(1.0, np.rint(mid_ticks * (self.spread_bps * 1e-4) * spread_noise))
        # Keep the bid at least one tick above zero however far the walk wanders.
        bid_ticks = np.maximum(1.0, np.floor(mid_ticks - 0.5 * spread))
        ask_ticks = bid_ticks + spread
        mul, div = self._mul[sym], self._div[sym]
        bid = bid_ticks * mul / div
        ask = ask_ticks * mul / div

        trade_price = np.where(buy, ask, bid)
        # Last trade price known at each tick: the latest trade of its symbol at or before
        # it in this batch (a running maximum of trade positions per grid row), else the
        # one carried over from earlier batches.
        latest = np.full(s_count * n, -1, dtype=np.intp)
        latest[flat] = np.where(is_trade, rows, -1)
        latest = latest.reshape(s_count, n)
        np.maximum.accumulate(latest, axis=1, out=latest)
        prior = latest.reshape(-1)[flat]
        last_price = np.where(prior >= 0, trade_price[prior], self._last_trade[sym])
        ended = latest[:, -1]
        traded = ended >= 0
        self._last_trade[traded] = trade_price[ended[traded]]

        size_scale = BOOK_NOTIONAL / (mid_ticks * tick)
        out["ts_ns"] = now_ns
        out["recv_ns"] = now_ns
        out["bid"] = bid
        out["ask"] = ask
        out["last_price"] = last_price
        sizes = self._size_noise
        out["bid_size"] = size_scale * np.take(sizes, rows + noise[1], mode="wrap")
        out["ask_size"] = size_scale * np.take(sizes, rows + noise[2], mode="wrap")
        trade_size = TRADE_FRACTION * size_scale * np.take(sizes, rows + noise[3], mode="wrap")
        out["last_size"] = np.where(is_trade, trade_size, 0.0)
        out["symbol"] = sym
        out["kind"] = np.where(is_trade, TickKind.TRADE, TickKind.QUOTE)
        out["side"] = np.where(is_trade, np.where(buy, Side.BUY, Side.SELL), Side.NONE)

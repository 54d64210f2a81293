"""Live market data from any ccxt.pro exchange, as TICK records (plain asyncio logic).

Per symbol, one task watches the top of book (``watch_bids_asks`` where the exchange has it,
else ``watch_order_book``'s best levels) and one watches trades. Each update becomes one
TICK: ``ts_ns`` is the exchange's time (the receive time when the exchange sends none, as
Binance's bookTicker), ``recv_ns`` the time ccxt handed the update over. A TRADE carries the
latest known best bid/ask; a QUOTE the last trade price. ccxt hands over the latest state
when several updates arrive between two reads (top of book is sampled, never stale);
trades are never dropped (ccxt caches them between reads).

A watcher that fails with a network error (dropped connection, timeout, order-book
resync) writes one GAP tick for its symbol (once per outage, whichever watcher notices
first), waits with exponential backoff and watches again: ccxt reconnects on that call.
Any other error (bad symbol, authentication) ends the feed: retrying cannot fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import ccxt
import numpy as np

from appliance.markets import instrument_problems
from appliance.model.instruments import Instrument
from appliance.model.records import TICK, Side, TickKind

log = logging.getLogger(__name__)

# Errors after which watching again can succeed: connection trouble and book resyncs.
RETRYABLE = (ccxt.NetworkError, ccxt.ChecksumError, ccxt.InvalidNonce)


class FeedError(RuntimeError):
    """The feed cannot run (a refused symbol, bad credentials, an unusable exchange)."""


class Backoff:
    """Exponential backoff from ``initial`` to ``maximum`` seconds; reset on success."""

    def __init__(self, initial: float = 0.25, maximum: float = 30.0) -> None:
        self.initial, self.maximum = initial, maximum
        self.delay = initial

    def next(self) -> float:
        d = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return d

    def reset(self) -> None:
        self.delay = self.initial


class CcxtFeed:
    """TICK batches from ``exchange`` (a ccxt.pro instance, markets loaded or loadable) for
    ``instruments``: the instrument table (ccxt unified symbols and their grids); a tick's
    ``symbol`` is the row's index. They are checked against the exchange's markets before
    anything runs."""

    def __init__(
        self,
        exchange: Any,
        instruments: Sequence[Instrument],
        *,
        backoff: tuple[float, float] = (0.25, 30.0),
        batch_size: int = 256,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.exchange = exchange
        self.instruments = list(instruments)
        self.symbols = [i.name for i in self.instruments]
        self.backoff = backoff
        self.batch_size = batch_size
        self.clock = clock
        n = len(self.symbols)
        self.bid, self.ask = np.zeros(n), np.zeros(n)
        self.bid_size, self.ask_size = np.zeros(n, np.float32), np.zeros(n, np.float32)
        self.last = np.zeros(n)
        self.in_gap = [False] * n
        self.gaps = 0  # GAP ticks produced
        self.reconnects = 0  # watches resumed after a retryable error
        self._queue: asyncio.Queue[tuple] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    # ---- life cycle -------------------------------------------------------------------

    async def start(self, gap_first: bool = False) -> None:
        """Load markets (none are fetched when preloaded) and start watching. ``gap_first``:
        begin with a GAP for every symbol (a restarted feed: ticks were missed)."""
        await self.exchange.load_markets()
        problems = instrument_problems(self.exchange, self.instruments)
        if problems:
            raise FeedError("; ".join(msg for _, msg in problems))
        has = self.exchange.has
        top = self._watch_bids_asks if has.get("watchBidsAsks") else self._watch_book
        if not has.get("watchTrades"):
            raise FeedError(f"{self.exchange.id} cannot watch trades through ccxt.pro")
        if gap_first:
            for i in range(len(self.symbols)):
                self._gap(i)
        for i in range(len(self.symbols)):
            self._tasks.append(asyncio.create_task(self._watch(i, top)))
            self._tasks.append(asyncio.create_task(self._watch(i, self._watch_trades)))

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.exchange.close()

    async def batches(self, max_wait_s: float = 0.05) -> AsyncIterator[np.ndarray]:
        """TICK arrays (``seq`` left 0: the ring stamps it) as updates arrive; an empty one
        after ``max_wait_s`` without any, so the caller can do its housekeeping."""
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), max_wait_s)
            except TimeoutError:
                self._check_tasks()
                yield np.zeros(0, TICK)
                continue
            rows = [first]
            while len(rows) < self.batch_size and not self._queue.empty():
                rows.append(self._queue.get_nowait())
            yield self._records(rows)

    def _check_tasks(self) -> None:
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    # ---- watchers ---------------------------------------------------------------------

    async def _watch(self, i: int, once: Callable[[int], Any]) -> None:
        backoff = Backoff(*self.backoff)
        symbol = self.symbols[i]
        while True:
            try:
                await once(i)
            except RETRYABLE as exc:
                self._gap(i)
                self.reconnects += 1
                delay = backoff.next()
                log.warning("%s: %s; watching again in %.2fs", symbol, _brief(exc), delay)
                await asyncio.sleep(delay)
                continue
            except ccxt.BaseError as exc:
                raise FeedError(f"{self.exchange.id} {symbol}: {_brief(exc)}") from None
            backoff.reset()
            self.in_gap[i] = False

    async def _watch_bids_asks(self, i: int) -> None:
        got = await self.exchange.watch_bids_asks([self.symbols[i]])
        t = got.get(self.symbols[i])
        if t is not None:
            self._quote(i, t.get("bid"), t.get("ask"), t.get("bidVolume"), t.get("askVolume"),
                        t.get("timestamp"))  # fmt: skip

    async def _watch_book(self, i: int) -> None:
        book = await self.exchange.watch_order_book(self.symbols[i])
        bid = book["bids"][0] if book["bids"] else (0.0, 0.0)
        ask = book["asks"][0] if book["asks"] else (0.0, 0.0)
        self._quote(i, bid[0], ask[0], bid[1], ask[1], book.get("timestamp"))

    async def _watch_trades(self, i: int) -> None:
        for tr in await self.exchange.watch_trades(self.symbols[i]):
            now = self.clock()
            price = _num(tr.get("price"))
            self.last[i] = price
            side = Side.BUY if tr.get("side") == "buy" else Side.SELL if tr.get("side") else 0
            ts = tr.get("timestamp")
            self._put(TickKind.TRADE, i, _ns(ts, now), now, price, _num(tr.get("amount")), side)

    # ---- records ----------------------------------------------------------------------

    def _quote(self, i, bid, ask, bid_size, ask_size, ts_ms) -> None:
        now = self.clock()
        self.bid[i], self.ask[i] = _num(bid), _num(ask)
        self.bid_size[i], self.ask_size[i] = _num(bid_size), _num(ask_size)
        self._put(TickKind.QUOTE, i, _ns(ts_ms, now), now, self.last[i], 0.0, 0)

    def _gap(self, i: int) -> None:
        if self.in_gap[i]:
            return
        self.in_gap[i] = True
        self.gaps += 1
        # What was known before the gap is no longer the market: forget it.
        self.bid[i] = self.ask[i] = self.last[i] = 0.0
        self.bid_size[i] = self.ask_size[i] = 0.0
        now = self.clock()
        self._put(TickKind.GAP, i, now, now, 0.0, 0.0, 0)

    def _put(self, kind: int, i: int, ts: int, recv: int, last: float, size: float, side: int):
        """Queue one row: the tick's own fields and the book as it stands now."""
        book = (self.bid[i], self.ask[i], self.bid_size[i], self.ask_size[i])
        self._queue.put_nowait((kind, i, ts, recv, *book, last, size, int(side)))

    _COLUMNS = ("kind", "symbol", "ts_ns", "recv_ns", "bid", "ask", "bid_size", "ask_size",
                "last_price", "last_size", "side")  # fmt: skip

    def _records(self, rows: list[tuple]) -> np.ndarray:
        out = np.zeros(len(rows), TICK)
        for name, column in zip(self._COLUMNS, zip(*rows, strict=True), strict=True):
            out[name] = column
        return out


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def _ns(ts_ms: Any, fallback: int) -> int:
    return int(ts_ms) * 1_000_000 if isinstance(ts_ms, int | float) and ts_ms else fallback


def _brief(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"

"""Order updates pushed by the exchange: ccxt.pro ``watch_my_trades`` in a thread of its own.

The venue is synchronous (the execution loop calls it); this thread runs an asyncio loop
that watches the account's trades and hands them over through a queue. A failed watch
(dropped connection) is retried with backoff and counted in ``reconnects``: the venue then
fetches what it may have missed over REST before it takes another order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import ccxt

log = logging.getLogger(__name__)


class TradeWatcher:
    def __init__(
        self,
        make_exchange: Callable[[], Any],
        scrub: Callable[[str], str],
        backoff: tuple[float, float] = (0.25, 10.0),
    ) -> None:
        self._make = make_exchange
        self._scrub = scrub
        self._backoff = backoff
        self.trades: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.reconnects = 0  # watches resumed after a network error
        self.error: str | None = None  # a non-network error ended the watcher
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="ccxt-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._watch())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _watch(self) -> None:
        exchange = self._make()
        delay = self._backoff[0]
        try:
            await exchange.load_markets()
            while True:
                try:
                    for trade in await exchange.watch_my_trades():
                        self.trades.put(trade)
                    delay = self._backoff[0]
                except ccxt.NetworkError as exc:
                    self.reconnects += 1
                    log.warning("order updates: %s; watching again in %.2fs",
                                self._scrub(str(exc))[:300], delay)  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._backoff[1])
        except Exception as exc:  # ccxt's auth failures are not always ccxt errors
            self.error = self._scrub(f"{type(exc).__name__}: {exc}")[:500]
            log.error("order updates stopped: %s (falling back to polling)", self.error)
        finally:
            with contextlib.suppress(Exception):
                await exchange.close()

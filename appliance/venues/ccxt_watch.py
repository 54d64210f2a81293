"""Order updates pushed by the exchange: ccxt.pro ``watch_my_trades`` in a thread of its own.

The venue is synchronous (the execution loop calls it); this thread runs an asyncio loop
that watches the account's trades and hands them over through a queue. A failed watch
(dropped connection) is retried with backoff and counted in ``reconnects``: the venue then
fetches what it may have missed over REST before it takes another order. On the same loop
the REST safety net (ccxt_sweep.py) reconciles the open orders right after each
subscription becomes live and every ``sweep_interval_s``.
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

from appliance.venues.ccxt_sweep import RestSweep

log = logging.getLogger(__name__)

LIVE_CHECK_S = 0.05  # how often the sweeper looks whether a subscription became live


class TradeWatcher:
    def __init__(
        self,
        make_exchange: Callable[[], Any],
        scrub: Callable[[str], str],
        backoff: tuple[float, float] = (0.25, 10.0),
        sweep_interval_s: float = 5.0,
    ) -> None:
        self._make = make_exchange
        self._scrub = scrub
        self._backoff = backoff
        self.sweep_interval_s = sweep_interval_s
        self.trades: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.sweep = RestSweep()
        self.reconnects = 0  # watches resumed after a network error
        self.error: str | None = None  # a non-network error ended the watcher
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="ccxt-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._task is not None and not self._loop.is_closed():  # not stopped already
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._task = self._loop.create_task(self._watch())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _watch(self) -> None:
        exchange = None
        try:  # making it fails too, e.g. on an exchange ccxt.pro has no class for
            exchange = self._make()
            await exchange.load_markets()
            tasks = [
                asyncio.create_task(self._trades(exchange)),
                asyncio.create_task(self._sweeps(exchange)),
            ]
            try:  # both run until stopped: the first to end raised
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            finally:  # ended, before the exchange closes under a request in flight
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except Exception as exc:  # ccxt's auth failures are not always ccxt errors
            error = self._scrub(f"{type(exc).__name__}: {exc}")[:500]
            log.error("order updates stopped: %s (falling back to polling)", error)
            self.error = error  # last: the venue's thread reads it, the log has it by then
        finally:
            if exchange is not None:
                with contextlib.suppress(Exception):
                    await exchange.close()

    async def _trades(self, exchange: Any) -> None:
        delay = self._backoff[0]
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

    async def _sweeps(self, exchange: Any) -> None:
        """A REST pass when a subscription became live (what happened before it is not
        pushed) and every ``sweep_interval_s`` (what the stream lost)."""
        loop = asyncio.get_running_loop()
        live, due = False, loop.time() + self.sweep_interval_s
        while True:
            was, live = live, subscribed(exchange)
            if (live and not was) or loop.time() >= due:
                due = loop.time() + self.sweep_interval_s
                try:
                    await self.sweep.run(exchange)
                except Exception as exc:  # an odd answer too: the stream must go on
                    log.warning("open orders over REST: %s; again in %.1fs",
                                self._scrub(f"{type(exc).__name__}: {exc}")[:300],
                                self.sweep_interval_s)  # fmt: skip
            await asyncio.sleep(LIVE_CHECK_S)


def subscribed(exchange: Any) -> bool:
    """Whether the exchange's private stream is live. ccxt.pro gives no signal for it, so:
    every websocket holding a subscription is connected, and none still waits for the
    answer to a login or subscribe request (ccxt keys those by the request id or an
    ``authenticate...`` hash, a live stream's by the data's message hash). Should this ever
    answer early, the next periodic pass still finds what it missed."""
    clients = [c for c in exchange.clients.values() if c.subscriptions]
    return bool(clients) and all(_answered(c) for c in clients)


def _answered(client: Any) -> bool:
    up = client.connected
    if not up.done() or up.cancelled() or up.exception() is not None:
        return False
    return not any(str(k).isdigit() or str(k).startswith("authenticat") for k in client.futures)

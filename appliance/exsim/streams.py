"""Websocket side of the loopback exchange: market streams replayed from the capture, and
user-data streams fed by the matching engine.

Market streams speak Binance's protocol: ``/ws`` and ``/ws/<stream>`` send raw events,
``/stream?streams=a/b`` wraps them as ``{"stream", "data"}``; ``SUBSCRIBE``, ``UNSUBSCRIBE``
and ``LIST_SUBSCRIPTIONS`` requests work on either. Stream names are normalised the way
Binance treats them: ``<sym>@depth``, ``<sym>@depth@100ms`` and ``<sym>@depth@1000ms`` all
get the captured diff-depth events; ``<sym>@trade`` gets the captured aggTrades converted to
trade events (same price, quantity, time and aggressor; the aggregate id as the trade id).

The replay starts ``start_delay_s`` after the first market subscription (so that every
subscription of a starting client lands before the first frame) and runs at the recorded
pace (``speed`` times faster if asked) or as fast as the clients read, once or in a loop.
Event times (``E``, and ``T`` moved with it) are set to the replay's clock when each frame
is sent; prices and quantities are the capture's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from appliance.exsim.book import Book
from appliance.exsim.capture import Capture, Frame
from appliance.exsim.matching import MatchingEngine

log = logging.getLogger(__name__)

FAST_YIELD_EVERY = 64  # frames between yields to the event loop when pacing is "fast"


def canonical(stream: str) -> str:
    """The replay's name for a requested stream (depth rates map to one depth stream)."""
    s = stream.lower()
    for suffix in ("@100ms", "@1000ms"):
        s = s.removesuffix(suffix)
    return s


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    combined: bool
    streams: dict[str, str] = field(default_factory=dict)  # canonical -> name as requested


class MarketHub:
    """Open market-stream connections and what each subscribed to."""

    def __init__(self) -> None:
        self.conns: set[_Conn] = set()
        self.subscribed = asyncio.Event()

    def subscribe(self, conn: _Conn, names: list[str]) -> None:
        for n in names:
            conn.streams[canonical(n)] = n
        if conn.streams:
            self.subscribed.set()

    async def publish(self, stream: str, data: dict[str, Any]) -> int:
        sent = 0
        raw = None
        for conn in list(self.conns):
            name = conn.streams.get(stream)
            if name is None or conn.ws.closed:
                continue
            if conn.combined:
                text = orjson.dumps({"stream": name, "data": data}).decode()
            else:
                raw = raw or orjson.dumps(data).decode()
                text = raw
            try:
                await conn.ws.send_str(text)
                sent += 1
            except (ConnectionError, RuntimeError):
                self.conns.discard(conn)
        return sent

    async def serve(self, request: web.Request, name: str | None, combined: bool):
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, combined)
        self.conns.add(conn)
        if name:
            self.subscribe(conn, [name])
        if combined and request.query.get("streams"):
            self.subscribe(conn, request.query["streams"].split("/"))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(self._request(conn, msg.data).decode())
        finally:
            self.conns.discard(conn)
        return ws

    def _request(self, conn: _Conn, text: str) -> bytes:
        try:
            req = orjson.loads(text)
            method, params, rid = req.get("method"), req.get("params") or [], req.get("id")
        except (orjson.JSONDecodeError, AttributeError):
            return orjson.dumps({"code": 3, "msg": "Invalid JSON: expected an object"})
        if method == "SUBSCRIBE":
            self.subscribe(conn, [str(p) for p in params])
            return orjson.dumps({"result": None, "id": rid})
        if method == "UNSUBSCRIBE":
            for p in params:
                conn.streams.pop(canonical(str(p)), None)
            return orjson.dumps({"result": None, "id": rid})
        if method == "LIST_SUBSCRIPTIONS":
            return orjson.dumps({"result": sorted(conn.streams.values()), "id": rid})
        return orjson.dumps({"code": 2, "msg": f"Invalid request: unknown method {method!r}"})

    async def drop(self) -> int:
        """Close every market connection (what a network drop looks like to clients)."""
        conns, self.conns = list(self.conns), set()
        for conn in conns:
            await conn.ws.close(code=1001, message=b"dropped by the exchange simulator")
        return len(conns)


class UserHub:
    """User-data subscribers: WebSocket-API subscriptions and listenKey streams.

    Two faults for tests and demonstrations: ``hold`` leaves new subscriptions unanswered
    (and receiving nothing) until ``release``, as a slow exchange does; ``lose`` drops the
    next events of a kind without closing any stream, as a lost frame does.
    """

    def __init__(self) -> None:
        self.api: dict[web.WebSocketResponse, int] = {}  # ws-api socket -> subscriptionId
        self.keyed: dict[web.WebSocketResponse, str] = {}  # listenKey socket -> key
        self.listen_keys: dict[str, float] = {}  # key -> last keepalive (monotonic)
        self.held = False
        self.lost: Counter[str] = Counter()  # event type -> events still to lose
        self.waiting: list[tuple[web.WebSocketResponse, Any, str | None]] = []
        self._next_sub = 0

    def subscribe_api(self, ws: web.WebSocketResponse, rid: Any) -> dict[str, Any] | None:
        """The answer to a ws-api subscribe request with id ``rid`` (None while held)."""
        if self.held:
            self.waiting.append((ws, rid, None))
            return None
        sid = self._next_sub
        self._next_sub += 1
        self.api[ws] = sid
        return {"id": rid, "status": 200, "result": {"subscriptionId": sid}}

    def subscribe_keyed(self, ws: web.WebSocketResponse, key: str) -> None:
        if self.held:
            self.waiting.append((ws, None, key))
        else:
            self.keyed[ws] = key

    async def release(self) -> int:
        """Answer and start the subscriptions held since ``hold``; how many."""
        self.held = False
        waiting, self.waiting = self.waiting, []
        for ws, rid, key in waiting:
            if key is not None:
                self.subscribe_keyed(ws, key)
            elif (answer := self.subscribe_api(ws, rid)) is not None:
                await self._send(ws, answer)
        return len(waiting)

    async def publish(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            kind = ev.get("e", "")
            if self.lost[kind] > 0:
                self.lost[kind] -= 1
                log.info("lost a %s user-data event (as asked)", kind)
                continue
            for ws, sid in list(self.api.items()):
                await self._send(ws, {"subscriptionId": sid, "event": ev})
            for ws in list(self.keyed):
                await self._send(ws, ev)

    async def _send(self, ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
        try:
            await ws.send_str(orjson.dumps(msg).decode())
        except (ConnectionError, RuntimeError):
            self.api.pop(ws, None)
            self.keyed.pop(ws, None)

    def forget(self, ws: web.WebSocketResponse) -> None:
        self.api.pop(ws, None)
        self.keyed.pop(ws, None)
        self.waiting = [w for w in self.waiting if w[0] is not ws]

    async def drop(self) -> int:
        socks = [*self.api, *self.keyed, *(w[0] for w in self.waiting)]
        self.api, self.keyed, self.waiting = {}, {}, []
        for ws in socks:
            await ws.close(code=1001, message=b"dropped by the exchange simulator")
        return len(socks)


class Replay:
    """Plays the capture's frames into the books, the matching engine and the hubs."""

    def __init__(
        self,
        capture: Capture,
        books: dict[str, Book],
        engine: MatchingEngine,
        market: MarketHub,
        users: UserHub,
        *,
        pace: str = "recorded",
        loop: bool = True,
        start_delay_s: float = 1.0,
        speed: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        if pace not in ("recorded", "fast"):
            raise ValueError(f"pace must be 'recorded' or 'fast', got {pace!r}")
        self.frames = capture.frames
        self.books, self.engine = books, engine
        self.market, self.users = market, users
        self.pace, self.loop, self.start_delay_s = pace, loop, start_delay_s
        self.speed = speed  # recorded pace: time runs this many times faster
        self.state = "waiting"  # waiting -> running -> finished (once through, no loop)
        self.passes = 0
        self.frames_sent = 0

    async def run(self) -> None:
        await self.market.subscribed.wait()
        await asyncio.sleep(self.start_delay_s)
        self.state = "running"
        log.info("replay started (%s pace, %s)", self.pace, "looping" if self.loop else "once")
        while True:
            await self._pass()
            self.passes += 1
            if not self.loop:
                self.state = "finished"
                log.info("replay finished after one pass (%d frames)", self.frames_sent)
                return
            for book in self.books.values():
                event = book.reset(_now_ms())
                await self._publish(f"{book.symbol.lower()}@depth", event)

    async def _pass(self) -> None:
        t0 = time.monotonic()
        first = self.frames[0].recv_ts if self.frames else 0.0
        for i, frame in enumerate(self.frames):
            if self.pace == "recorded":
                delay = (frame.recv_ts - first) / self.speed - (time.monotonic() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % FAST_YIELD_EVERY == 0:
                await asyncio.sleep(0)
            await self._frame(frame)

    async def _frame(self, frame: Frame) -> None:
        data = _retimed(frame.data)
        stream = canonical(frame.stream)
        sym = data.get("s", "")
        if data.get("e") == "depthUpdate":
            book = self.books.get(sym)
            if book is None:
                return
            served = book.apply(data)
            if served is None:
                return  # already in the snapshot
            await self._publish(stream, served)
            await self.users.publish(self.engine.on_book(sym))
            return
        await self._publish(stream, data)
        if data.get("e") == "aggTrade":
            await self._publish(stream.replace("@aggtrade", "@trade"), _as_trade(data))
            if sym in self.engine.filters:
                price, qty = Decimal(data["p"]), Decimal(data["q"])
                await self.users.publish(self.engine.on_trade(sym, price, qty))

    async def _publish(self, stream: str, data: dict[str, Any]) -> None:
        await self.market.publish(stream, data)
        self.frames_sent += 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _retimed(data: dict[str, Any]) -> dict[str, Any]:
    """A copy with the event time set to now and the trade time moved with it."""
    out = dict(data)
    if "E" in out:
        now = _now_ms()
        if "T" in out:
            out["T"] = int(out["T"]) + now - int(out["E"])
        out["E"] = now
    return out


def _as_trade(agg: dict[str, Any]) -> dict[str, Any]:
    """An aggTrade event as a trade-stream event (Binance's ``<sym>@trade``)."""
    return {
        "e": "trade",
        "E": agg["E"],
        "s": agg["s"],
        "t": agg["a"],
        "p": agg["p"],
        "q": agg["q"],
        "T": agg["T"],
        "m": agg["m"],
        "M": agg.get("M", True),
    }

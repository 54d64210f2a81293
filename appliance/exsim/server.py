"""The loopback exchange's HTTP side: Binance's spot REST API, signed as Binance signs it.

Public: ``ping``, ``time``, ``exchangeInfo`` (the captured one), ``depth`` (the replayed
book). Signed (auth.py: HMAC-SHA256 of the query string and body, key in ``X-MBX-APIKEY``,
``timestamp`` within ``recvWindow``): new/cancel/query order, open orders, all orders, my
trades, account. ``userDataStream`` (key only) creates, keeps alive and closes listenKeys
for ``/ws/<listenKey>``. ``/ws-api/v3`` answers ``userDataStream.subscribe.signature``
(what ccxt.pro uses for spot ``watch_orders``/``watch_my_trades``/``watch_balance``),
``ping`` and ``time``. The ``/sim/*`` endpoints (controls.py) are the simulator's own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import WSMsgType, web

from appliance.exsim.auth import RequestAuth
from appliance.exsim.book import Book
from appliance.exsim.capture import Capture
from appliance.exsim.controls import SimControls, json_response
from appliance.exsim.matching import MatchingEngine
from appliance.exsim.rules import BinanceError, Filters, mandatory
from appliance.exsim.streams import MarketHub, Replay, UserHub

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # loopback only, whatever the caller asks
DEFAULT_PORT = 8765

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ExchangeSim:
    """The whole loopback exchange for one capture; ``app()`` is its aiohttp application."""

    def __init__(
        self,
        capture: Capture,
        *,
        api_key: str,
        api_secret: str,
        pace: str = "recorded",
        loop: bool = True,
        start_delay_s: float = 1.0,
        speed: float = 1.0,
        balance: Decimal = Decimal(1_000_000),
    ) -> None:
        self.capture = capture
        self.auth = RequestAuth(api_key, api_secret, _ms)
        self.filters = {s["symbol"]: Filters.from_info(s) for s in capture.exchange_info["symbols"]}
        last_u: dict[str, int] = {}
        for f in capture.frames:
            if f.data.get("e") == "depthUpdate":
                last_u[f.data["s"]] = int(f.data["u"])
        self.books = {
            sym: Book(sym, snap, last_u.get(sym, int(snap["lastUpdateId"])))
            for sym, snap in capture.depth.items()
        }
        self.engine = MatchingEngine(self.filters, self.books, balance)
        self.market, self.users = MarketHub(), UserHub()
        self.requests: Counter[str] = Counter()  # per path, for status and tests
        self.delays: dict[str, list[float]] = {}  # path -> answer delays still to apply
        self.truncate: list[int] = []  # how many trades the next myTrades answers keep
        self.replay = Replay(
            capture, self.books, self.engine, self.market, self.users,
            pace=pace, loop=loop, start_delay_s=start_delay_s, speed=speed,
        )  # fmt: skip

    # ---- application ------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors])
        signed = {
            ("POST", "/api/v3/order"): self._new_order,
            ("DELETE", "/api/v3/order"): self._cancel,
            ("GET", "/api/v3/order"): self._query,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("GET", "/api/v3/allOrders"): self._all_orders,
            ("GET", "/api/v3/myTrades"): self._my_trades,
            ("GET", "/api/v3/account"): self._account,
            ("GET", "/sapi/v1/capital/config/getall"): self._coins,
            # binance's fetch_markets asks for margin pairs when it has a key: none here
            ("GET", "/sapi/v1/margin/allPairs"): self._no_margin,
            ("GET", "/sapi/v1/margin/isolated/allPairs"): self._no_margin,
        }
        for (method, path), fn in signed.items():
            app.router.add_route(method, path, self._signed(fn))
        for method in ("POST", "PUT", "DELETE"):
            app.router.add_route(method, "/api/v3/userDataStream", self._listen_key)
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_get("/api/v3/depth", self._depth)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/ws/{name}", self._ws)
        app.router.add_get("/stream", self._ws)
        app.router.add_get("/ws-api/v3", self._ws_api)
        SimControls(self).add_routes(app)
        app.on_startup.append(self._start_replay)
        app.on_cleanup.append(self._stop_replay)
        return app

    async def _start_replay(self, app: web.Application) -> None:
        self._replay_task = asyncio.create_task(self.replay.run())

    async def _stop_replay(self, app: web.Application) -> None:
        self._replay_task.cancel()
        await self.market.drop()
        await self.users.drop()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests[request.path] += 1
        try:
            response = await handler(request)
            pending = self.delays.get(request.path)
            if pending:  # processed, but the answer comes late (a client may time out)
                await asyncio.sleep(pending.pop(0))
            return response
        except BinanceError as exc:
            return json_response(exc.body(), exc.status)
        except web.HTTPNotFound:
            log.warning("no such endpoint: %s %s", request.method, request.path)
            return json_response({"code": -1000, "msg": f"Unknown endpoint {request.path}"}, 404)

    # ---- authentication ---------------------------------------------------------------

    def _signed(self, fn: Callable[[dict[str, str]], Awaitable[Any]]) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            self.auth.check_key(request.headers.get("X-MBX-APIKEY"))
            params = self.auth.signed_params(request.query_string, await request.text())
            return json_response(await fn(params))

        return handler

    # ---- public -----------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": _ms()})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        return json_response(self.capture.exchange_info | {"serverTime": _ms()})

    async def _depth(self, request: web.Request) -> web.Response:
        symbol = request.query.get("symbol", "")
        if not symbol:
            raise mandatory("symbol")
        if symbol not in self.filters:
            raise BinanceError(-1121, "Invalid symbol.")
        limit = min(int(request.query.get("limit", 100)), 5000)
        book = self.books.get(symbol)
        if book is None:  # a market the capture holds no book for: an empty one
            return json_response({"lastUpdateId": 0, "bids": [], "asks": []})
        return json_response(book.snapshot(limit))

    # ---- signed -----------------------------------------------------------------------

    async def _new_order(self, p: dict[str, str]) -> Any:
        answer, events = self.engine.new_order(p)
        await self.users.publish(events)
        return answer

    async def _cancel(self, p: dict[str, str]) -> Any:
        answer, events = self.engine.cancel(p)
        await self.users.publish(events)
        return answer

    async def _query(self, p: dict[str, str]) -> Any:
        return self.engine.query(p)

    async def _open_orders(self, p: dict[str, str]) -> Any:
        return self.engine.open_orders(p)

    async def _all_orders(self, p: dict[str, str]) -> Any:
        return self.engine.all_orders(p)

    async def _my_trades(self, p: dict[str, str]) -> Any:
        trades = self.engine.my_trades(p)
        return trades[: self.truncate.pop(0)] if self.truncate else trades

    async def _account(self, p: dict[str, str]) -> Any:
        return {
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
            "sellerCommission": 0, "canTrade": True, "canWithdraw": True, "canDeposit": True,
            "brokered": False, "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": _ms(), "accountType": "SPOT", "balances": self.engine.balances(),
            "permissions": ["SPOT"], "uid": 1,
        }  # fmt: skip

    async def _coins(self, p: dict[str, str]) -> Any:
        """Assets as ccxt's fetch_currencies reads them (binance asks when it has a key)."""
        return [
            {"coin": b["asset"], "name": b["asset"], "free": b["free"], "locked": b["locked"],
             "trading": True, "isLegalMoney": False, "depositAllEnable": True,
             "withdrawAllEnable": True, "networkList": []}
            for b in self.engine.balances()
        ]  # fmt: skip

    async def _no_margin(self, p: dict[str, str]) -> Any:
        return []

    async def _listen_key(self, request: web.Request) -> web.Response:
        self.auth.check_key(request.headers.get("X-MBX-APIKEY"))
        keys = self.users.listen_keys
        if request.method == "POST":
            key = secrets.token_hex(30)
            keys[key] = time.monotonic()
            return json_response({"listenKey": key})
        params = dict(request.query) | dict(parse_qsl(await request.text()))
        key = params.get("listenKey", "")
        if key not in keys:
            raise BinanceError(-1125, "This listenKey does not exist.")
        if request.method == "PUT":
            keys[key] = time.monotonic()
        else:
            del keys[key]
            for ws, k in list(self.users.keyed.items()):
                if k == key:
                    await ws.close(code=1000, message=b"listenKey closed")
        return json_response({})

    # ---- websockets -------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name")
        if name and name in self.users.listen_keys:
            return await self._ws_user(request, name)
        return await self.market.serve(request, name, request.path.startswith("/stream"))

    async def _ws_user(self, request: web.Request, key: str) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.users.subscribe_keyed(ws, key)
        try:
            async for _ in ws:
                pass
        finally:
            self.users.forget(ws)
        return ws

    async def _ws_api(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    answer = self._api_request(ws, msg.data)
                    if answer is not None:  # None: a held subscription, answered later
                        await ws.send_str(orjson.dumps(answer).decode())
        finally:
            self.users.forget(ws)
        return ws

    def _api_request(self, ws: web.WebSocketResponse, text: str) -> dict[str, Any] | None:
        try:
            req = orjson.loads(text)
            rid, method, params = req.get("id"), req.get("method"), req.get("params") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return {"id": None, "status": 400, "error": {"code": -1100, "msg": "Malformed."}}
        try:
            if method == "ping":
                return {"id": rid, "status": 200, "result": {}}
            if method == "time":
                return {"id": rid, "status": 200, "result": {"serverTime": _ms()}}
            if method == "userDataStream.subscribe.signature":
                self.auth.check_ws_signature(params)
                return self.users.subscribe_api(ws, rid)
            if method == "userDataStream.unsubscribe":
                self.users.forget(ws)
                return {"id": rid, "status": 200, "result": {}}
            raise BinanceError(-1000, f"Unsupported method {method!r} in this simulator.")
        except BinanceError as exc:
            return {"id": rid, "status": exc.status, "error": exc.body()}

    # ---- the simulator's own endpoints ------------------------------------------------


def _ms() -> int:
    return time.time_ns() // 1_000_000


async def serve(sim: ExchangeSim, port: int = DEFAULT_PORT) -> web.AppRunner:
    """Start ``sim`` on 127.0.0.1:``port`` (0: any free port); the runner (``cleanup`` it)."""
    runner = web.AppRunner(sim.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a started runner listens on."""
    return int(runner.addresses[0][1])


def client_urls(port: int, host: str = HOST) -> dict[str, Any]:
    """The ``urls`` a ccxt/ccxt.pro binance-family client needs to talk to this simulator
    (deep-merged into the exchange's own, so the other keys stay as they were)."""
    http, ws = f"http://{host}:{port}", f"ws://{host}:{port}"
    return {
        "api": {
            "public": f"{http}/api/v3",
            "private": f"{http}/api/v3",
            "v1": f"{http}/api/v1",
            "sapi": f"{http}/sapi/v1",
            "ws": {"spot": f"{ws}/ws", "ws-api": {"spot": f"{ws}/ws-api/v3"}},
        }
    }

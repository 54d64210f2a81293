"""The simulator's own endpoints, for demonstrations and tests of failure handling.

``GET /sim/status``; ``POST /sim/drop`` (close client websockets), ``/sim/delay`` (answer
requests late: a client's timeout after the exchange acted), ``/sim/hold`` and
``/sim/release`` (user-data subscriptions wait, unanswered, in between), ``/sim/lose``
(user-data events not sent, the streams staying open), ``/sim/truncate`` (myTrades answers
cut short: trades listed late).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class SimControls:
    """What the simulator shows of itself and the faults it can be told to make."""

    def __init__(self, sim: Any) -> None:
        self.sim = sim  # the ExchangeSim (server.py) whose routes these join

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/sim/status", self._status)
        app.router.add_post("/sim/drop", self._drop)
        app.router.add_post("/sim/delay", self._delay)
        app.router.add_post("/sim/hold", self._hold)
        app.router.add_post("/sim/release", self._release)
        app.router.add_post("/sim/lose", self._lose)
        app.router.add_post("/sim/truncate", self._truncate)

    async def _status(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "replay": self.sim.replay.state,
                "passes": self.sim.replay.passes,
                "frames_sent": self.sim.replay.frames_sent,
                "market_connections": len(self.sim.market.conns),
                "user_connections": len(self.sim.users.api) + len(self.sim.users.keyed),
                "held_subscriptions": len(self.sim.users.waiting),
                "orders": len(self.sim.engine.account.orders),
                "trades": len(self.sim.engine.account.trades),
                "requests": dict(self.sim.requests),
            }
        )

    async def _delay(self, request: web.Request) -> web.Response:
        """Answer the next ``count`` requests to ``path`` ``seconds`` late (after doing them)."""
        path = request.query.get("path", "/api/v3/order")
        count, seconds = int(request.query.get("count", 1)), float(request.query["seconds"])
        self.sim.delays.setdefault(path, []).extend([seconds] * count)
        return json_response({"path": path, "delays": self.sim.delays[path]})

    async def _hold(self, request: web.Request) -> web.Response:
        """Leave new user-data subscriptions unanswered, receiving nothing, until release."""
        self.sim.users.held = True
        return json_response({"held": True})

    async def _release(self, request: web.Request) -> web.Response:
        return json_response({"released": await self.sim.users.release()})

    async def _lose(self, request: web.Request) -> web.Response:
        """Send none of the next ``count`` user-data events of type ``event`` (default
        executionReport), the streams staying open: what a lost frame looks like."""
        event = request.query.get("event", "executionReport")
        self.sim.users.lost[event] += int(request.query.get("count", 1))
        return json_response({"lose": dict(self.sim.users.lost)})

    async def _truncate(self, request: web.Request) -> web.Response:
        """The next ``count`` myTrades answers list their first ``keep`` trades only: what an
        exchange slow to list its trades looks like."""
        keep, count = int(request.query.get("keep", 0)), int(request.query.get("count", 1))
        self.sim.truncate.extend([keep] * count)
        return json_response({"truncate": self.sim.truncate})

    async def _drop(self, request: web.Request) -> web.Response:
        """Close client websockets: ``?what=market`` (default), ``user`` or ``all``."""
        what = request.query.get("what", "market")
        n = 0
        if what in ("market", "all"):
            n += await self.sim.market.drop()
        if what in ("user", "all"):
            n += await self.sim.users.drop()
        return json_response({"dropped": n})

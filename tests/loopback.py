"""The loopback exchange in a thread of the test process, ccxt clients and venues for it, and
the capture files read directly (what tests check clients against)."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from appliance.exsim import ExchangeSim, bound_port, client_urls, load_capture, serve
from appliance.markets import Credentials, ExchangeSettings, make_exchange
from appliance.model.instruments import Instrument
from appliance.venues.ccxt_state import CcxtVenueState
from appliance.venues.ccxt_venue import CcxtVenue
from appliance.venues.ccxt_watch import TradeWatcher

DATA = Path(__file__).resolve().parent / "data"
KEY, SECRET = "test-key", "test-secret"


class SimThread:
    """An ExchangeSim on its own event loop in a daemon thread, on a free loopback port."""

    def __init__(self, folder: str, **options) -> None:
        self.sim = ExchangeSim(
            load_capture(DATA / folder), api_key=KEY, api_secret=SECRET, **options
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner = self.call(serve(self.sim, 0))
        self.port = bound_port(self.runner)

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def urls(self) -> dict:
        return client_urls(self.port)

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def settings(exchange_id: str, port: int, secret: str = SECRET, **kw) -> ExchangeSettings:
    """Settings pointing a real ccxt client of ``exchange_id`` at the simulator on ``port``:
    only its urls change (and binance loads spot markets only: the simulator has no other)."""
    options = {"fetchMarkets": {"types": ["spot"]}} if exchange_id == "binance" else {}
    creds = Credentials({"api_key": KEY, "secret": secret})
    return ExchangeSettings(exchange_id, client_urls(port), options, credentials=creds, **kw)


def client(exchange_id: str, port: int, secret: str = SECRET, *, pro: bool = True):
    return make_exchange(settings(exchange_id, port, secret), pro=pro)


#: The venue tests' instruments (binance-us markets).
INSTRUMENTS = [Instrument("CRV/USDT", 0.1, 0.001), Instrument("OMG/BUSD", 0.01, 0.0001)]
CRV, OMG = 0, 1


@pytest.fixture
def make_venue() -> Iterator:
    """make_venue(sim, folder, watch=False, secret=SECRET, sweep_s=5.0, watch_id=None, **kw):
    a started ccxt venue on the binanceus classes, its state file in ``folder``; ``watch``:
    fills through ccxt.pro (the ``watch_id`` exchange's, binanceus unless set), with the REST
    safety net every ``sweep_s``. Closed after the test."""
    venues: list[CcxtVenue] = []

    def make(
        sim: SimThread,
        folder: Path,
        *,
        watch=False,
        secret=SECRET,
        sweep_s=5.0,
        watch_id=None,
        **kw,
    ) -> CcxtVenue:
        s = settings("binanceus", sim.port, secret)
        watcher = None
        if watch:
            pro_settings = s if watch_id is None else settings(watch_id, sim.port, secret)
            pro = functools.partial(make_exchange, pro_settings, pro=True)
            watcher = TradeWatcher(pro, s.credentials.scrub, sweep_interval_s=sweep_s)
        venue = CcxtVenue(
            make_exchange(s, pro=False),
            INSTRUMENTS,
            CcxtVenueState(folder / "venue.sqlite", synchronous="NORMAL"),
            s.credentials,
            watcher=watcher,
            retry_backoff_s=0.01,
            poll_interval_s=0.05,
            **kw,
        )
        venue.start()
        venues.append(venue)
        return venue

    yield make
    for v in venues:
        v.close()


def sim_post(sim: SimThread, what: str, **query) -> dict:
    """One of the simulator's own requests (``/sim/<what>``), e.g. a fault to inject."""
    answer = requests.post(f"http://127.0.0.1:{sim.port}/sim/{what}", params=query, timeout=5)
    answer.raise_for_status()
    return answer.json()


@pytest.fixture
def make_sim() -> Iterator:
    sims: list[SimThread] = []

    def make(folder: str = "binance-us", **options) -> SimThread:
        options.setdefault("pace", "fast")
        options.setdefault("loop", False)
        options.setdefault("start_delay_s", 0.3)
        sims.append(SimThread(folder, **options))
        return sims[-1]

    yield make
    for s in sims:
        s.stop()


def capture_frames(folder: str) -> list[dict]:
    """The frames of a capture's stream.ws, read straight from the file."""
    lines = (DATA / folder / "stream.ws").read_text().splitlines()[1:]
    return [json.loads(line.partition(": ")[2]) for line in lines if line.strip()]


def capture_info(folder: str) -> dict:
    return json.loads((DATA / folder / "exchangeInfo.http").read_text().partition(": ")[2])


def capture_snapshots(folder: str) -> dict[str, dict]:
    """The REST book snapshots of depth.http: {symbol: {"id", "bids": {p: q}, "asks"}}."""
    books = {}
    for line in (DATA / folder / "depth.http").read_text().splitlines():
        if not line.strip():
            continue
        url, _, rest = line.partition(" -> ")
        snap = json.loads(rest.partition(": ")[2])
        books[url.split("symbol=")[1].split("&")[0]] = {
            "id": snap["lastUpdateId"],
            "bids": {float(p): float(q) for p, q in snap["bids"]},
            "asks": {float(p): float(q) for p, q in snap["asks"]},
        }
    return books


def capture_books(folder: str) -> dict[str, dict]:
    """Each symbol's book at the end of the capture, per Binance's rules (snapshot, then the
    diffs after it), computed from the files alone."""
    books = capture_snapshots(folder)
    for frame in capture_frames(folder):
        d = frame["data"]
        if d.get("e") != "depthUpdate" or d["u"] <= books[d["s"]]["id"]:
            continue
        for side, key in (("bids", "b"), ("asks", "a")):
            for p, q in d[key]:
                if float(q) == 0:
                    books[d["s"]][side].pop(float(p), None)
                else:
                    books[d["s"]][side][float(p)] = float(q)
        books[d["s"]]["id"] = d["u"]
    return books


#: The captures and the ccxt id of the exchange each was recorded from.
VENUES = [("binance-us", "binanceus"), ("binance-spot", "binance")]


def unified(exchange, market_id: str) -> str:
    return exchange.markets_by_id[market_id][0]["symbol"]

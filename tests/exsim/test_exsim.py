"""The loopback exchange against the real ccxt and ccxt.pro binance and binanceus classes.

Everything a client receives is checked against the capture files themselves (read by the
test, not by the simulator): markets and their filters, trades, best bid/ask, order books.
"""

from __future__ import annotations

import asyncio
import time

import ccxt
import pytest

from tests.loopback import (
    VENUES,
    capture_books,
    capture_frames,
    capture_info,
    capture_snapshots,
    client,
    unified,
)


@pytest.mark.parametrize(("folder", "exchange_id"), VENUES)
def test_markets_load_with_the_real_filters(make_sim, folder, exchange_id):
    sim = make_sim(folder)
    ex = client(exchange_id, sim.port, pro=False)
    markets = ex.load_markets()
    info = capture_info(folder)["symbols"]
    assert len(markets) == len(info)
    for s in info:
        f = {x["filterType"]: x for x in s["filters"]}
        m = ex.markets_by_id[s["symbol"]][0]
        assert m["precision"]["price"] == float(f["PRICE_FILTER"]["tickSize"])
        assert m["precision"]["amount"] == float(f["LOT_SIZE"]["stepSize"])
        assert m["limits"]["amount"]["min"] == float(f["LOT_SIZE"]["minQty"])
        assert m["limits"]["cost"]["min"] == float(f["MIN_NOTIONAL"]["minNotional"])


async def _watch_all(ex, symbols, sim, expected_trades, last_ids):
    """Watch trades, best bid/ask and books until the client holds the whole capture."""
    trades: dict[str, list] = {s: [] for s in symbols}
    tops = {s: [] for s in symbols}
    books = {}

    async def watch_trades(s):
        while True:
            trades[s] += await ex.watch_trades(s)

    async def watch_tops(s):
        while True:
            for t in (await ex.watch_bids_asks([s])).values():
                tops[s].append((t["bid"], t["ask"]))

    async def watch_book(s):
        while True:
            books[s] = await ex.watch_order_book(s)

    tasks = [asyncio.create_task(watch_trades(s)) for s in symbols]
    tasks += [asyncio.create_task(watch_book(s)) for s in symbols]
    tasks += [asyncio.create_task(watch_tops(s)) for s in symbols]
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            for t in tasks:
                if t.done():
                    t.result()  # a failed watcher fails the test
            done = sim.sim.replay.state == "finished"
            got_trades = sum(len(v) for v in trades.values()) >= expected_trades
            got_books = all(s in books and books[s]["nonce"] == last_ids[s] for s in symbols)
            if done and got_trades and got_books:
                break
        else:
            raise AssertionError(f"client did not receive the capture: {books.keys()}")
    finally:
        for t in tasks:
            t.cancel()
        await ex.close()
    return trades, tops, books


@pytest.mark.parametrize(("folder", "exchange_id"), VENUES)
def test_streams_deliver_what_the_capture_holds(make_sim, folder, exchange_id):
    sim = make_sim(folder)
    ex = client(exchange_id, sim.port)
    frames = [f["data"] for f in capture_frames(folder)]
    expected_books = capture_books(folder)

    async def run():
        await ex.load_markets()
        symbols = [unified(ex, mid) for mid in expected_books]
        agg = [d for d in frames if d.get("e") == "aggTrade"]
        last_ids = {unified(ex, mid): b["id"] for mid, b in expected_books.items()}
        return symbols, agg, await _watch_all(ex, symbols, sim, len(agg), last_ids)

    symbols, agg, (trades, tops, books) = asyncio.run(run())
    # trades: every one, in order, with the capture's id, price, amount and aggressor
    got = [
        (t["symbol"], t["id"], t["price"], t["amount"], t["side"])
        for s in symbols
        for t in trades[s]
    ]
    want = [
        (
            unified(ex, d["s"]),
            str(d["a"]),
            float(d["p"]),
            float(d["q"]),
            "sell" if d["m"] else "buy",
        )
        for s in symbols
        for d in agg
        if unified(ex, d["s"]) == s
    ]
    assert got == want and len(got) == len(agg) > 0
    # best bid/ask: ccxt hands over the latest when several arrive between reads, so what
    # the client saw is a subsequence of the capture's bookTickers; ccxt's own cache ends
    # at the capture's last one
    for s in symbols:
        captured = [
            (float(d["b"]), float(d["a"]))
            for d in frames
            if "u" in d and "e" not in d and unified(ex, d["s"]) == s
        ]
        seen = iter(captured)
        assert all(pair in seen for pair in tops[s]), s
        if not captured:
            assert not tops[s]
            continue
        assert tops[s], s
        assert (ex.bidsasks[s]["bid"], ex.bidsasks[s]["ask"]) == captured[-1], s
    # books: identical to the capture's snapshot with its diffs applied
    for mid, want_book in expected_books.items():
        book = books[unified(ex, mid)]
        bids = [tuple(level) for level in book["bids"][:50]]
        asks = [tuple(level) for level in book["asks"][:50]]
        assert bids == sorted(want_book["bids"].items(), reverse=True)[:50]
        assert asks == sorted(want_book["asks"].items())[:50]


def test_order_books_stay_consistent_across_replay_passes(make_sim):
    sim = make_sim("binance-us", loop=True)
    ex = client("binanceus", sim.port)

    async def run():
        nonces = []
        try:
            while sim.sim.replay.passes < 3:
                book = await asyncio.wait_for(ex.watch_order_book("CRV/USDT"), 30)
                nonces.append(book["nonce"])
        finally:
            await ex.close()
        return nonces

    nonces = asyncio.run(run())  # a broken id sequence raises ChecksumError in ccxt
    assert nonces == sorted(nonces) and nonces[-1] > capture_books("binance-us")["CRVUSDT"]["id"]


def test_orders_are_placed_filled_cancelled_and_fetched(make_sim):
    sim = make_sim("binance-us")
    ex = client("binanceus", sim.port, pro=False)
    ex.load_markets()
    sym = "CRV/USDT"
    bal0 = ex.fetch_balance()
    rest = ex.create_order(sym, "limit", "buy", 10, 2.0, {"newClientOrderId": "7-v1"})
    assert rest["status"] == "open" and rest["clientOrderId"] == "7-v1"
    assert [o["clientOrderId"] for o in ex.fetch_open_orders(sym)] == ["7-v1"]
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        ex.create_order(sym, "limit", "buy", 10, 2.0, {"newClientOrderId": "7-v1"})
    ex.cancel_order(rest["id"], sym)
    assert ex.fetch_order(None, sym, {"origClientOrderId": "7-v1"})["status"] == "canceled"
    assert ex.fetch_open_orders(sym) == []

    # no market subscriber, so no frame was replayed: the book is the captured snapshot
    best_ask, qty = min(capture_snapshots("binance-us")["CRVUSDT"]["asks"].items())
    assert qty > 10
    taken = ex.create_order(sym, "market", "buy", 10, None, {"newClientOrderId": "7-v2"})
    assert taken["status"] == "closed" and taken["filled"] == 10
    assert taken["average"] == best_ask  # the best ask held more than 10
    trades = ex.fetch_my_trades(sym)
    assert [(t["order"], t["amount"], t["price"]) for t in trades] == [(taken["id"], 10, best_ask)]
    bal = ex.fetch_balance()
    assert bal["CRV"]["total"] == pytest.approx(bal0["CRV"]["total"] + 10)
    fee = trades[0]["fee"]["cost"]
    assert bal["USDT"]["total"] == pytest.approx(bal0["USDT"]["total"] - 10 * best_ask - fee)


@pytest.mark.parametrize(
    ("amount", "price", "failure"),
    [(10.05, 2.0, "LOT_SIZE"), (10, 2.0005, "PRICE_FILTER"), (1, 2.0, "MIN_NOTIONAL")],
)
def test_orders_break_the_real_filters_as_binance_says(make_sim, amount, price, failure):
    sim = make_sim("binance-us")
    ex = client("binanceus", sim.port, pro=False)
    ex.load_markets()
    # sent as given (no ccxt rounding) to reach the exchange's own checks
    params = {"symbol": "CRVUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
              "quantity": str(amount), "price": str(price)}  # fmt: skip
    # (ccxt maps these to InvalidOrder or BadRequest, as it does for the real exchange)
    with pytest.raises(ccxt.ExchangeError, match=rf"-1013.*Filter failure: {failure}"):
        ex.privatePostOrder(params)
    assert sim.sim.engine.account.orders == {}


@pytest.mark.parametrize("secret", ["wrong-secret", ""])
def test_a_wrong_secret_is_refused_as_binance_refuses_it(make_sim, secret):
    sim = make_sim("binance-us")
    ex = client("binanceus", sim.port, secret=secret or "x" * 64, pro=False)
    ex.load_markets()  # public: no signature needed
    with pytest.raises(
        ccxt.AuthenticationError, match=r"-1022.*Signature for this request is not valid"
    ):
        ex.create_order("CRV/USDT", "limit", "buy", 10, 2.0)
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        ex.fetch_balance()
    assert sim.sim.engine.account.orders == {}


def test_an_unknown_key_is_refused(make_sim):
    sim = make_sim("binance-us")
    ex = client("binanceus", sim.port, pro=False)
    ex.apiKey = "someone-else"
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        ex.fetch_balance()


def test_user_data_stream_reports_orders_trades_and_balances(make_sim):
    sim = make_sim("binance-us")
    ex = client("binanceus", sim.port)
    seen = {"orders": [], "trades": [], "balance": []}

    async def run():
        await ex.load_markets()

        async def pump(name, coro_fn):
            while True:
                seen[name].append(await coro_fn())

        tasks = [
            asyncio.create_task(pump("orders", ex.watch_orders)),
            asyncio.create_task(pump("trades", ex.watch_my_trades)),
            asyncio.create_task(pump("balance", ex.watch_balance)),
        ]
        try:
            while not sim.sim.users.api:  # subscribed through the WebSocket API
                await asyncio.sleep(0.02)
            order = await ex.create_order("OMG/BUSD", "market", "sell", 5, None,
                                          {"newClientOrderId": "9-v1"})  # fmt: skip
            deadline = time.monotonic() + 20
            while not (seen["trades"] and seen["balance"] and any(
                o["status"] == "closed" for batch in seen["orders"] for o in batch
            )):  # fmt: skip
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.02)
            rest_trades = await ex.fetch_my_trades("OMG/BUSD")
        finally:
            for t in tasks:
                t.cancel()
            await ex.close()
        return order, rest_trades

    order, rest_trades = asyncio.run(run())
    orders = [o for batch in seen["orders"] for o in batch]
    assert {o["clientOrderId"] for o in orders} == {"9-v1"}
    assert orders[-1]["status"] == "closed" and orders[-1]["filled"] == 5
    ws_trades = [t for batch in seen["trades"] for t in batch]
    assert [t["id"] for t in ws_trades] == [t["id"] for t in rest_trades]
    assert all(t["order"] == order["id"] for t in ws_trades)
    assert seen["balance"][-1]["OMG"]["free"] == pytest.approx(1_000_000 - 5)


def test_listen_key_stream_carries_execution_reports(make_sim):
    """The older user-data path: a listenKey from REST, events on /ws/<listenKey>."""
    import aiohttp

    sim = make_sim("binance-us")
    ex = client("binanceus", sim.port, pro=False)
    ex.load_markets()
    key = ex.publicPostUserDataStream()["listenKey"]

    async def listen():
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(f"ws://127.0.0.1:{sim.port}/ws/{key}") as ws,
        ):
            await asyncio.to_thread(
                ex.create_order, "CRV/USDT", "market", "buy", 10, None, {"newClientOrderId": "k1"}
            )
            events = []
            while len(events) < 3:
                events.append((await ws.receive_json(timeout=10))["e"])
            return events

    assert asyncio.run(listen()) == [
        "executionReport",
        "executionReport",
        "outboundAccountPosition",
    ]
    ex.publicPutUserDataStream({"listenKey": key})
    ex.publicDeleteUserDataStream({"listenKey": key})
    with pytest.raises(ccxt.ExchangeError, match="-1125"):
        ex.publicPutUserDataStream({"listenKey": key})

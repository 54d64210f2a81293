import sqlite3

import numpy as np
import pytest

from appliance.model.orders import OrderState
from appliance.model.records import TICK, OrderType, RejectReason, Side, TickKind
from appliance.venues.base import OrderRequest, QuoteBook, price_extremes
from appliance.venues.paper import _RESTING_SQL, PaperVenue, PaperVenueError

S = OrderState
MKT, LMT = OrderType.MARKET, OrderType.LIMIT


@pytest.fixture
def venue(tmp_path, quotes):
    v = PaperVenue(tmp_path / "venue.sqlite", 2, lot_size=0.01, taker_bps=10, maker_bps=2,
                   synchronous="NORMAL", clock=lambda: 42)  # fmt: skip
    v.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=5.0))
    yield v
    v.close()


def req(cid, side=Side.BUY, qty=1.0, otype=MKT, limit=0.0, symbol=0):
    return OrderRequest(cid, symbol, side, otype, qty, limit)


def test_market_fills_at_opposite_best_with_taker_fee(venue):
    buy = venue.submit(req("b", Side.BUY, 2.0))
    sell = venue.submit(req("s", Side.SELL, 1.0))
    assert buy.state is S.FILLED and sell.state is S.FILLED
    (fb,), (fs,) = buy.fills, sell.fills
    assert (fb.price, fb.qty, fb.maker) == (101.0, 2.0, False)
    assert fb.fee == pytest.approx(2.0 * 101.0 * 10 / 1e4)
    assert fs.price == 100.0 and fb.venue_fill_id != fs.venue_fill_id


def test_market_partial_fill_cancels_remainder(venue, quotes):
    st = venue.submit(req("b", qty=8.0))
    assert st.state is S.CANCELED and st.filled_qty == pytest.approx(5.0)
    assert sum(f.qty for f in st.fills) == pytest.approx(5.0)
    # the quoted size is used up until the next tick
    again = venue.submit(req("b2", qty=1.0))
    assert again.state is S.REJECTED and again.reason is RejectReason.NO_LIQUIDITY
    venue.on_ticks(quotes(0, 100.0, 101.0, size=5.0))
    assert venue.submit(req("b3", qty=1.0)).state is S.FILLED


def test_market_without_quote_is_rejected(tmp_path):
    v = PaperVenue(tmp_path / "v.sqlite", 1, synchronous="NORMAL")
    st = v.submit(req("x"))
    assert st.state is S.REJECTED and st.reason is RejectReason.NO_MARKET
    assert v.fetch_order("x").state is S.REJECTED


def test_bad_orders_rejected(venue):
    assert venue.submit(req("a", qty=0.001)).reason is RejectReason.BAD_ORDER
    assert venue.submit(req("b", otype=LMT, limit=-1)).reason is RejectReason.BAD_ORDER
    assert venue.submit(req("c", symbol=9)).reason is RejectReason.UNKNOWN_SYMBOL


def test_marketable_limit_takes_then_rests(venue):
    st = venue.submit(req("l", Side.BUY, 7.0, LMT, 102.0))
    assert st.state is S.PARTIALLY_FILLED
    (f,) = st.fills
    assert (f.price, f.qty, f.maker) == (101.0, 5.0, False)  # best price, not the limit
    assert [o.client_id for o in venue.open_orders()] == ["l"]


def test_limit_rests_then_fills_on_trade_through_as_maker(venue, quotes, trade):
    st = venue.submit(req("l", Side.BUY, 2.0, LMT, 99.0))
    assert st.state is S.ACCEPTED and not st.fills
    assert venue.on_ticks(trade(0, 99.5, 99.0, 99.6)) == []  # trade above the limit
    assert venue.on_ticks(quotes(0, 98.0, 99.2)) == []  # ask still above
    (f,) = venue.on_ticks(trade(0, 99.0, 98.5, 99.5))  # a trade at the limit reaches it
    assert (f.client_id, f.price, f.qty, f.maker) == ("l", 99.0, 2.0, True)
    assert f.fee == pytest.approx(2.0 * 99.0 * 2 / 1e4)
    assert venue.fetch_order("l").state is S.FILLED and venue.open_orders() == []


def test_sell_limit_fills_when_quote_crosses(venue, quotes):
    venue.submit(req("s", Side.SELL, 1.0, LMT, 103.0))
    (f,) = venue.on_ticks(quotes(0, 103.5, 104.0))
    assert f.price == 103.0 and f.maker


def test_any_tick_of_the_batch_counts_not_only_the_last(venue, quotes, trade):
    venue.submit(req("l", Side.BUY, 1.0, LMT, 99.0))
    venue.submit(req("other", Side.BUY, 1.0, LMT, 9.0, symbol=1))
    batch = np.concatenate([
        quotes(1, 10.0, 11.0),
        trade(0, 98.0, 97.0, 99.5),     # dips through 99 ...
        quotes(0, 100.0, 101.0),        # ... and recovers within the same batch
    ])  # fmt: skip
    (f,) = venue.on_ticks(batch)
    assert f.client_id == "l"


def test_duplicate_client_id_rejected_original_untouched(venue):
    first = venue.submit(req("dup", Side.BUY, 1.0, LMT, 90.0))
    again = venue.submit(req("dup", Side.SELL, 1.0))
    assert again.duplicate and again.state is S.REJECTED
    assert venue.fetch_order("dup").state is first.state is S.ACCEPTED
    assert len(venue.open_orders()) == 1


def test_state_survives_restart(tmp_path, quotes, trade):
    path = tmp_path / "v.sqlite"
    v = PaperVenue(path, 1, lot_size=0.01, synchronous="NORMAL")
    v.on_ticks(quotes(0, 100.0, 101.0))
    v.submit(req("m", qty=1.0))
    v.submit(req("l", Side.BUY, 1.0, LMT, 95.0))
    del v  # crash: nothing closed
    v2 = PaperVenue(path, 1, lot_size=0.01, synchronous="NORMAL")
    assert [o.client_id for o in v2.open_orders()] == ["l"]
    assert v2.submit(req("m")).duplicate  # still remembers every id
    (f,) = v2.on_ticks(trade(0, 94.0, 93.0, 95.5))
    assert f.venue_fill_id != v2.fetch_order("m").fills[0].venue_fill_id  # ids continue
    assert v2.fetch_order("l").state is S.FILLED
    assert v2.fetch_order("never-sent") is None


def test_file_with_the_old_resting_index_still_opens_and_uses_it(tmp_path, quotes):
    path = tmp_path / "v.sqlite"
    v = PaperVenue(path, 1, lot_size=0.01, synchronous="NORMAL")
    v.on_ticks(quotes(0, 100.0, 101.0))
    v.submit(req("l", Side.BUY, 1.0, LMT, 95.0))
    v.submit(req("m", qty=1.0))
    v.close()
    c = sqlite3.connect(path, isolation_level=None)  # as files before the names were used
    c.executescript(
        "DROP INDEX orders_resting;"
        "CREATE INDEX orders_resting ON orders(state) WHERE state IN (3, 4);"
    )
    c.close()
    v = PaperVenue(path, 1, lot_size=0.01, synchronous="NORMAL")
    assert [o.client_id for o in v.open_orders()] == ["l"]
    plan = v._conn.execute(
        f"EXPLAIN QUERY PLAN SELECT client_id FROM orders WHERE {_RESTING_SQL}"
    ).fetchall()
    assert "INDEX orders_resting" in str(plan), plan
    v.close()


def test_cancel(venue, trade):
    venue.submit(req("l", Side.BUY, 1.0, LMT, 90.0))
    assert venue.cancel("l").state is S.CANCELED
    assert venue.open_orders() == [] and venue.on_ticks(trade(0, 80.0, 79.0, 81.0)) == []
    assert venue.cancel("l").state is S.CANCELED  # idempotent
    assert venue.cancel("unknown") is None


def test_corrupt_state_file(tmp_path):
    bad = tmp_path / "venue.sqlite"
    bad.write_bytes(b"\x00garbage" * 500)
    with pytest.raises(PaperVenueError, match=r"venue\.sqlite"):
        PaperVenue(bad, 1)


def test_quote_book_and_extremes_vectorised():
    rng = np.random.default_rng(0)
    n, k = 5000, 7
    t = np.zeros(n, TICK)
    t["symbol"] = rng.integers(0, k + 1, n)  # symbol k is outside the table: ignored
    t["bid"] = rng.uniform(90, 100, n)
    t["ask"] = t["bid"] + 0.5
    t["kind"] = rng.choice([TickKind.QUOTE, TickKind.TRADE], n)
    t["last_price"] = rng.uniform(85, 105, n)
    book = QuoteBook(k)
    book.update(t)
    low, high = price_extremes(t, k)
    for s in range(k):
        rows = t[t["symbol"] == s]
        assert book.bid[s] == rows["bid"][-1] and book.ask[s] == rows["ask"][-1]
        trades = rows["kind"] == TickKind.TRADE
        assert low[s] == min(rows["ask"].min(), rows["last_price"][trades].min())
        assert high[s] == max(rows["bid"].max(), rows["last_price"][trades].max())


def test_resting_index_matches_the_orders_through_adds_fills_and_cancels(tmp_path, quotes, trade):
    rng = np.random.default_rng(7)
    path = tmp_path / "v.sqlite"
    v = PaperVenue(path, 2, lot_size=0.01, synchronous="NORMAL")
    v.on_ticks(quotes([0, 1], [100.0, 10.0], [101.0, 11.0], size=0.0))
    live: dict[str, tuple[int, int, float]] = {}  # what must rest, in arrival order
    n = 0
    for step in range(300):
        for _ in range(int(rng.integers(0, 6))):
            sym, side = int(rng.integers(0, 2)), int(rng.choice([1, -1]))
            mid = 100.0 if sym == 0 else 10.0
            limit = round(mid * (1 - side * rng.uniform(0.02, 0.2)), 2)
            v.submit(req(f"o{n}", side, 0.01, LMT, limit, sym))
            live[f"o{n}"] = (sym, side, limit)
            n += 1
        if live and rng.random() < 0.3:
            cid = list(live)[int(rng.integers(0, len(live)))]
            assert v.cancel(cid).state is S.CANCELED
            del live[cid]
        if step == 150:  # restart: the index is rebuilt from the state file
            v.close()
            v = PaperVenue(path, 2, lot_size=0.01, synchronous="NORMAL")
        sym = int(rng.integers(0, 2))
        mid = 100.0 if sym == 0 else 10.0
        px = round(mid * rng.uniform(0.85, 1.15), 2)
        tick = trade(sym, px, px - 0.5, px + 0.5)
        tick["bid_size"] = tick["ask_size"] = 0.0  # nothing takes on arrival: all rest
        fills = v.on_ticks(tick)
        # the trade is the batch's extreme both ways: a buy at lim is reached iff px <= lim
        hit = [cid for cid, (s, sd, lim) in live.items() if s == sym and sd * (lim - px) >= 0]
        assert [f.client_id for f in fills] == hit  # every reached order, in arrival order
        for cid in hit:
            del live[cid]
        assert [o.client_id for o in v.open_orders()] == list(live)
    assert len(v._book.cids) < 2 * max(len(live), 64)  # dead slots get compacted
    v.close()


def test_resting_orders_cost_no_rebuild_per_change(tmp_path, quotes):
    # 50k orders rest; each submit then tick must not redo work proportional to all of them
    # (the index used to be rebuilt from the dict after every change: quadratic per run).
    path = tmp_path / "v.sqlite"
    PaperVenue(path, 1, lot_size=0.01, synchronous="NORMAL").close()
    c = sqlite3.connect(path)
    c.executemany(
        "INSERT INTO orders (client_id, symbol, side, order_type, qty, limit_price, lot, "
        "state, created_ns, updated_ns) VALUES (?, 0, 1, ?, 0.01, 50.0, 0.01, ?, 0, 0)",
        [(f"r{i}", int(LMT), int(S.ACCEPTED)) for i in range(50_000)],
    )
    c.commit()
    c.close()
    v = PaperVenue(path, 1, lot_size=0.01, synchronous="NORMAL")
    v.on_ticks(quotes(0, 100.0, 101.0))
    index = v._book
    arrays = (index.sym, index.side, index.limit, index.alive)
    for k in range(30):
        v.submit(req(f"n{k}", Side.BUY, 0.01, LMT, 50.0))
        assert v.on_ticks(quotes(0, 100.0, 101.0)) == []
    # the same index, updated in place: no rebuild, no compaction, no regrowth
    assert v._book is index and index.compactions == 0
    now = (index.sym, index.side, index.limit, index.alive)
    assert all(a is b for a, b in zip(arrays, now, strict=True))
    assert len(v.open_orders()) == 50_030
    v.close()

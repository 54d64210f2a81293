import numpy as np
import pytest

from appliance.model.enums import TradingState
from appliance.model.records import OrderType, RejectReason, Side
from appliance.trading.risk import Exposure, RiskEngine, RiskLimits, validate_intents

R = RejectReason
LOTS = np.array([0.1, 0.001])


def check(engine, batch, ref=100.0, position=0.0, open_buy=0.0, open_sell=0.0, **kw):
    """engine.check on ``batch``; ``price`` and ``mid`` default to ``ref``."""
    n = len(batch)
    reasons, lots = validate_intents(batch, LOTS)
    qty = lots * LOTS[np.where(reasons == 0, batch["symbol"], 0)]
    full = lambda x: np.broadcast_to(np.asarray(x, float), (n,)).copy()  # noqa: E731
    x = Exposure(
        qty, full(ref), full(kw.get("price", ref)), full(kw.get("mid", ref)), full(position),
        full(open_buy), full(open_sell), full(kw.get("open_orders", 0)),
    )  # fmt: skip
    return engine.check(batch, x, reasons).tolist()


@pytest.fixture
def engine():
    return RiskEngine(["A/B", "C/D"], RiskLimits(max_position=10.0, max_order_notional=1000.0))


def test_validation_reasons(intents):
    batch = intents([
        {"qty": 0.3},                      # 3 lots of 0.1 despite float noise
        {"qty": 0.0},
        {"qty": -1.0},
        {"qty": float("nan")},
        {"qty": 0.05},                     # below one lot
        {"side": 0},
        {"order_type": 9},
        {"order_type": OrderType.LIMIT, "limit_price": float("nan")},
        {"order_type": OrderType.LIMIT, "limit_price": -1.0},
        {"symbol": 7},
        {"qty": 0.37},                     # floored onto the grid
    ])  # fmt: skip
    reasons, lots = validate_intents(batch, LOTS)
    assert reasons.tolist() == [0] + [R.BAD_ORDER] * 8 + [R.UNKNOWN_SYMBOL, 0]
    assert lots.tolist() == [3] + [0] * 9 + [3]


def test_notional_uses_reference_price(engine, intents):
    batch = intents([
        {"qty": 9.0},
        {"qty": 11.0, "side": Side.SELL},
        {"qty": 5.0, "order_type": OrderType.LIMIT, "limit_price": 300.0},
    ])  # fmt: skip
    assert check(engine, batch, ref=[100.0, 100.0, 300.0]) == [0, R.MAX_NOTIONAL, R.MAX_NOTIONAL]


def test_no_market(engine, intents):
    assert check(engine, intents([{}]), ref=float("nan")) == [R.NO_MARKET]


def test_position_counts_open_orders_on_the_same_side(engine, intents):
    batch = intents([{"qty": 3.0}, {"qty": 3.0, "side": Side.SELL}])
    # long 5 + open buys 3 + 3 = 11 > 10; the sell side sees short exposure -5 + 0 + 3
    assert check(engine, batch, ref=1.0, position=5.0, open_buy=3.0) == [R.MAX_POSITION, 0]
    # open sells do not count against a buy
    assert check(engine, batch, ref=1.0, position=5.0, open_sell=9.0)[0] == 0
    # short 5 + open sells 3 + sell 3 = 11
    assert check(engine, batch, ref=1.0, position=-5.0, open_sell=3.0) == [0, R.MAX_POSITION]


def test_batch_is_checked_in_order_per_agent(engine, intents):
    batch = intents([
        {"qty": 8.0}, {"qty": 5.0}, {"qty": 2.0},      # agent 0: 8 ok, 13 no, 10 ok
        {"qty": 8.0, "agent": 1}, {"qty": 2.0, "agent": 1},   # agent 1: separate budget
        {"qty": 9.0, "symbol": 1},                     # another symbol: separate budget
    ])  # fmt: skip
    assert check(engine, batch, ref=1.0) == [0, R.MAX_POSITION, 0, 0, 0, 0]


def test_vectorised_equals_one_at_a_time(engine, intents):
    rng = np.random.default_rng(7)
    for _ in range(30):
        n = 60
        batch = intents([
            {"agent": int(rng.integers(3)), "side": int(rng.choice([-1, 1])),
             "qty": float(rng.integers(1, 60)) / 10}
            for _ in range(n)
        ])  # fmt: skip
        got = check(engine, batch, ref=1.0)
        used: dict = {}
        want = []
        for r in batch:
            k = (int(r["agent"]), int(r["side"]))
            if used.get(k, 0.0) + r["qty"] > 10.0 + 1e-9:
                want.append(R.MAX_POSITION)
            else:
                used[k] = used.get(k, 0.0) + r["qty"]
                want.append(0)
        assert got == want


def test_halted_rejects_everything_but_keeps_prior_reasons(engine, intents):
    engine.set_state("halted")
    batch = intents([{}, {"qty": 0.0}])
    assert check(engine, batch) == [R.HALTED, R.BAD_ORDER]


def test_reduce_only(engine, intents):
    engine.set_state(TradingState.REDUCE_ONLY)
    batch = intents([
        {"qty": 2.0, "side": Side.SELL},   # long 5 -> 3: shrinks
        {"qty": 2.0, "side": Side.SELL},   # -> 1
        {"qty": 2.0, "side": Side.SELL},   # would go short: refused
        {"qty": 1.0},                      # buying while long: grows
    ])  # fmt: skip
    assert check(engine, batch, ref=1.0, position=5.0) == [0, 0, R.REDUCE_ONLY, R.REDUCE_ONLY]


def test_limits_must_cover_every_symbol(intents):
    with pytest.raises(ValueError, match="C/D"):
        RiskEngine(["A/B", "C/D"], {"A/B": RiskLimits(1, 1)})
    e = RiskEngine(["A/B"], {"A/B": RiskLimits(1, 2)})
    e.set_limits({"A/B": RiskLimits(3, 4)})
    # the new limits apply: 3 within max_position 3 (notional 3 <= 4), 0.5 more is not
    assert check(e, intents([{"qty": 3.0}, {"qty": 0.5}]), ref=1.0) == [0, R.MAX_POSITION]
    with pytest.raises(ValueError):
        RiskLimits(-1, 1)


def test_max_order_qty(intents):
    e = RiskEngine(["A/B", "C/D"], RiskLimits(10.0, 1e6, max_order_qty=2.0))
    batch = intents([{"qty": 2.0}, {"qty": 2.1}, {"qty": 3.0, "side": Side.SELL}])
    assert check(e, batch, ref=1.0) == [0, R.MAX_ORDER_QTY, R.MAX_ORDER_QTY]


def test_price_band_around_the_mid(intents):
    e = RiskEngine(["A/B", "C/D"], RiskLimits(10.0, 1e6, price_band_bps=100.0))  # 1%
    lim = {"order_type": OrderType.LIMIT, "qty": 1.0}
    batch = intents([
        {**lim, "limit_price": 100.9},                        # within 1% of 100
        {**lim, "limit_price": 101.5},                        # a fat finger up
        {**lim, "limit_price": 98.0, "side": Side.SELL},      # and down
        {"qty": 1.0},                                         # market: its touch, 100.5
    ])  # fmt: skip
    price = [100.9, 101.5, 98.0, 100.5]
    assert check(e, batch, ref=price, price=price, mid=100.0) == [0, R.PRICE_BAND, R.PRICE_BAND, 0]
    # a band needs a mid to measure from
    assert check(e, batch[:1], ref=100.9, price=100.9, mid=float("nan")) == [R.NO_MARKET]


def test_max_open_orders_per_agent_and_symbol_counts_the_batch(intents):
    e = RiskEngine(["A/B", "C/D"], RiskLimits(100.0, 1e6, max_open_orders=3))
    batch = intents([
        {"qty": 1.0}, {"qty": 1.0, "side": Side.SELL}, {"qty": 1.0},   # agent 0: 2 open + 3
        {"qty": 1.0, "agent": 1},                                     # agent 1: its own count
        {"qty": 1.0, "symbol": 1},                                    # another symbol
    ])  # fmt: skip
    got = check(e, batch, ref=1.0, open_orders=[2, 2, 2, 0, 0])
    assert got == [0, R.MAX_OPEN_ORDERS, R.MAX_OPEN_ORDERS, 0, 0]


def test_cancel_passes_every_state_and_limit_but_not_a_bad_side(intents):
    e = RiskEngine(["A/B", "C/D"], RiskLimits(0.0, 0.0, max_order_qty=0.0, max_open_orders=0))
    cancel = {"order_type": OrderType.CANCEL, "qty": 0.0}
    batch = intents([cancel, {**cancel, "side": 0}, {**cancel, "symbol": 5}])
    for state in TradingState:
        e.set_state(state)
        assert check(e, batch, ref=float("nan")) == [0, R.BAD_ORDER, R.UNKNOWN_SYMBOL]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("state", [TradingState.ACTIVE, TradingState.REDUCE_ONLY])
def test_a_batch_is_judged_as_its_intents_one_at_a_time(intents, seed, state):
    """The compiled batch check equals checking each intent alone, in batch order, with
    the open quantity and count of the earlier passing intents of its agent added."""
    rng = np.random.default_rng(seed)
    e = RiskEngine(["A/B", "C/D"], RiskLimits(1.0, 1e6, max_open_orders=3))
    e.set_state(state)
    n = 60
    batch = intents([
        {"seq": i, "agent": int(rng.integers(0, 3)), "symbol": int(rng.integers(0, 2)),
         "side": int(rng.choice([-1, 1])), "qty": float(rng.choice([0.1, 0.3, 0.5]))}
        for i in range(n)
    ])  # fmt: skip
    position = rng.choice([-0.4, 0.0, 0.4], n)  # per intent: the same for an agent's symbol
    keys = list(zip(batch["agent"].tolist(), batch["symbol"].tolist(), strict=True))
    held = {k: float(position[keys.index(k)]) for k in set(keys)}
    position = np.array([held[k] for k in keys])
    got = check(e, batch, position=position)
    buy: dict = {}
    sell: dict = {}
    count: dict = {}
    want = []
    for i, k in enumerate(keys):
        one = batch[i : i + 1]
        r = check(e, one, position=held[k], open_buy=buy.get(k, 0.0), open_sell=sell.get(k, 0.0),
                  open_orders=count.get(k, 0))[0]  # fmt: skip
        want.append(r)
        if r == 0:
            side = buy if one["side"][0] > 0 else sell
            side[k] = side.get(k, 0.0) + float(one["qty"][0])
            count[k] = count.get(k, 0) + 1
    assert got == want
    assert R.MAX_OPEN_ORDERS in got or R.MAX_POSITION in got or R.REDUCE_ONLY in got

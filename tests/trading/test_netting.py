import numpy as np
import pytest

from appliance.model.records import Side
from appliance.trading.netting import net_market, pro_rata


def test_pro_rata_exact_and_bounded():
    assert pro_rata(10, [3, 3, 3, 3]).tolist() == [3, 3, 2, 2]  # ties to the earlier weights
    assert pro_rata(7, [5, 3, 2]).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4 -> remainder to .5
    assert pro_rata(0, [5, 3]).tolist() == [0, 0]
    assert pro_rata(8, [5, 3]).tolist() == [5, 3]
    rng = np.random.default_rng(1)
    for _ in range(200):
        w = rng.integers(0, 1000, rng.integers(1, 20))
        total = int(rng.integers(0, w.sum() + 1))
        s = pro_rata(total, w)
        assert s.sum() == total and (s <= w).all() and (s >= 0).all()
        assert (np.abs(s - total * w / max(w.sum(), 1)) < 1 + 1e-9).all()


def test_pro_rata_huge_quantities_use_exact_integers():
    w = [10**15, 3 * 10**15, 10**15 + 1]
    total = 2 * 10**15 + 7
    s = pro_rata(total, w)
    assert int(s.sum()) == total and all(int(a) <= b for a, b in zip(s, w, strict=True))


def test_pro_rata_refuses_overallocation():
    with pytest.raises(ValueError):
        pro_rata(11, [5, 5])


def test_net_crosses_smaller_side_and_sends_net():
    sym = np.array([0, 0, 0, 0])
    side = np.array([Side.BUY, Side.BUY, Side.SELL, Side.SELL])
    lots = np.array([30, 10, 5, 15])
    (r,) = net_market(sym, side, lots)
    assert r.side == Side.BUY and r.venue_lots == 20
    assert r.internal.tolist() == [15, 5, 5, 15]  # buys cross 20 of 40, pro rata
    assert r.venue.tolist() == [15, 5, 0, 0]
    assert r.members.tolist() == [0, 1, 2, 3]


def test_balanced_batch_sends_nothing():
    (r,) = net_market(np.array([2, 2]), np.array([1, -1]), np.array([7, 7]))
    assert r.side == Side.NONE and r.venue_lots == 0 and r.venue.tolist() == [0, 0]


def test_one_sided_batch_goes_to_venue_whole():
    (r,) = net_market(np.array([0, 0]), np.array([-1, -1]), np.array([3, 4]))
    assert r.side == Side.SELL and r.venue_lots == 7 and r.internal.tolist() == [0, 0]


def test_symbols_netted_separately_and_invariants():
    rng = np.random.default_rng(3)
    n = 500
    sym = rng.integers(0, 5, n)
    side = rng.choice([-1, 1], n)
    lots = rng.integers(1, 10_000, n)
    results = net_market(sym, side, lots)
    assert sorted(r.symbol for r in results) == sorted(set(sym.tolist()))
    seen = np.concatenate([r.members for r in results])
    assert sorted(seen.tolist()) == list(range(n))
    for r in results:
        m = r.members
        assert (sym[m] == r.symbol).all()
        assert ((r.internal + r.venue) == lots[m]).all()
        buys = side[m] > 0
        assert r.internal[buys].sum() == r.internal[~buys].sum()  # crossed exactly
        assert r.venue.sum() == r.venue_lots == abs(lots[m][buys].sum() - lots[m][~buys].sum())
        assert (r.venue[side[m] != r.side] == 0).all()
        assert (np.diff(m) > 0).all()  # batch order kept within a symbol

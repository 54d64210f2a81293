import numpy as np
import pytest

from appliance.trading.netting import cross, pro_rata


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


def test_market_orders_cross_at_the_mid_smaller_side_whole_larger_pro_rata():
    # market orders' prices are the touch they would take: buys the ask, sells the bid
    c = cross(np.array([101.0, 101.0]), [30, 10], np.array([100.0, 100.0]), [5, 15], 100.5)
    assert c.buy_fills == [(0, 15, 100.5), (1, 5, 100.5)]
    assert c.sell_fills == [(0, 5, 100.5), (1, 15, 100.5)]
    assert c.buy_left.tolist() == [15, 5] and c.sell_left.tolist() == [0, 0]


def test_balanced_batch_leaves_nothing_and_one_side_crosses_nothing():
    c = cross(np.array([11.0]), [7], np.array([10.0]), [7], 10.5)
    assert c.buy_left.tolist() == [0] and c.sell_left.tolist() == [0]
    c = cross(np.array([]), [], np.array([10.0, 10.0]), [3, 4], 10.5)
    assert c.sell_fills == [] and c.sell_left.tolist() == [3, 4]


def test_levels_meet_best_first_at_the_mid_clamped_into_both_prices():
    c = cross(np.array([101.0, 102.0]), [5, 5], np.array([101.5, 100.5]), [10, 3], 101.0)
    # 102 meets 100.5 (3 at the mid 101), then 101.5 (2 at 101.5: the mid is below it);
    # 101 < 101.5: no more
    assert c.buy_fills == [(1, 3, 101.0), (1, 2, 101.5)]
    assert c.sell_fills == [(1, 3, 101.0), (0, 2, 101.5)]
    assert c.buy_left.tolist() == [5, 0] and c.sell_left.tolist() == [8, 0]


def test_prices_not_reaching_each_other_never_cross():
    c = cross(np.array([99.0]), [5], np.array([100.0]), [5], 99.5)
    assert c.buy_fills == c.sell_fills == [] and c.buy_left.tolist() == [5]


def test_without_a_mid_a_meeting_prices_between_the_two():
    c = cross(np.array([100.2]), [1], np.array([100.0]), [1], float("nan"))
    assert c.buy_fills == [(0, 1, 100.1)]


def test_crossing_invariants():
    rng = np.random.default_rng(3)
    for _ in range(200):
        nb, ns = rng.integers(0, 8, 2)
        bp = rng.choice([99.0, 100.0, 101.0, 102.0], nb)
        sp = rng.choice([99.5, 100.5, 101.5], ns)
        bl, sl = rng.integers(1, 50, nb), rng.integers(1, 50, ns)
        c = cross(bp, bl, sp, sl, float(rng.choice([100.0, 101.0, np.nan])))
        bought = np.bincount([m for m, _, _ in c.buy_fills], [q for _, q, _ in c.buy_fills], nb)
        sold = np.bincount([m for m, _, _ in c.sell_fills], [q for _, q, _ in c.sell_fills], ns)
        assert bought.sum() == sold.sum()  # crossed exactly
        assert (bought + c.buy_left == bl).all() and (sold + c.sell_left == sl).all()
        assert all(p <= bp[m] for m, _, p in c.buy_fills)  # nobody pays above its price
        assert all(p >= sp[m] for m, _, p in c.sell_fills)
        if (c.buy_left > 0).any() and (c.sell_left > 0).any():  # nothing left that meets
            assert bp[c.buy_left > 0].max() < sp[c.sell_left > 0].min()

import math

import numpy as np
import pytest

from appliance.model.orders import Fill
from appliance.trading.portfolio import Portfolio


def f(side, lots, price, fee=0.0, agent=0, symbol=0, lot=0.1):
    return Fill("c", 0, 0, agent, symbol, side, lots, lot, price, fee, "venue", 0)


def test_average_cost_realised_and_flip():
    p = Portfolio()
    p.apply(f(+1, 10, 100.0))  # long 1.0 @ 100
    p.apply(f(+1, 10, 110.0))  # long 2.0 @ 105
    pos = p._pos[(0, 0, 0, 0)]
    assert pos.qty == pytest.approx(2.0) and pos.avg_price == pytest.approx(105.0)
    p.apply(f(-1, 10, 120.0))  # close 1.0: +15
    assert pos.realized == pytest.approx(15.0) and pos.avg_price == pytest.approx(105.0)
    p.apply(f(-1, 20, 100.0))  # close 1.0 at -5, flip to short 1.0 @ 100
    assert pos.realized == pytest.approx(10.0)
    assert pos.qty == pytest.approx(-1.0) and pos.avg_price == 100.0
    assert pos.unrealized(90.0) == pytest.approx(10.0)  # short gains when price falls
    p.apply(f(+1, 10, 95.0))  # flat
    assert pos.lots == 0 and pos.avg_price == 0.0 and pos.realized == pytest.approx(15.0)


def test_fees_and_marks():
    p = Portfolio()
    p.apply(f(+1, 10, 100.0, fee=0.5))
    p.apply(f(-1, 5, 50.0, fee=0.25, symbol=1))
    marks = np.array([110.0, math.nan])
    t = p.totals(marks)
    assert t.fees == pytest.approx(0.75)
    assert t.unrealized == pytest.approx(10.0)  # symbol 1 has no mark: counts zero
    assert t.position == pytest.approx(1.0 - 0.5) and t.realized == 0.0
    assert p.position((0, 0, 0, 0)) == pytest.approx(1.0) and p.position((9, 9, 9, 9)) == 0.0
    assert p.fill_count == 2


def test_rebuild_is_identical_to_incremental():
    rng = np.random.default_rng(11)
    fills = [
        f(int(rng.choice([-1, 1])), int(rng.integers(1, 50)), float(rng.uniform(90, 110)),
          fee=float(rng.uniform(0, 0.1)), agent=int(rng.integers(4)), symbol=int(rng.integers(3)))
        for _ in range(2000)
    ]  # fmt: skip
    inc = Portfolio()
    for x in fills:
        inc.apply(x)
    rebuilt = Portfolio()
    rebuilt.apply_all(fills)
    assert inc._pos == rebuilt._pos  # bit-identical, not approx
    marks = np.array([100.0, 101.0, 99.0])
    assert inc.totals(marks) == rebuilt.totals(marks)
    assert inc.positions() == rebuilt.positions()
    # positions are exact lot sums whatever the order of fills
    shuffled = Portfolio()
    shuffled.apply_all(fills[::-1])
    assert shuffled.positions() == inc.positions()


def test_lot_change_with_open_position_is_refused():
    p = Portfolio()
    p.apply(f(+1, 1, 1.0, lot=0.1))
    with pytest.raises(ValueError):
        p.apply(f(+1, 1, 1.0, lot=0.01))

"""Internal crossing of one symbol's intents by price level, and exact pro-rata allocation.

All quantities here are integer lots, so every split is exact: the parts of a quantity
always sum to it, with no float drift.

Crossing rule (``cross``), for buys and sells of one symbol, each with a price, the best
it accepts: buy levels from the highest price down meet sell levels from the lowest up
while the buy price is at least the sell price. Each meeting crosses the smaller of the
two levels' remaining quantities at the mid clamped into [sell price, buy price] (the
mid when it lies between them: neither side gives the other more than half the spread),
shared pro rata within each level: a level is simultaneous, no member has time priority.
Market orders of both sides meet at the mid (their prices are the touch they would take),
so for a batch of market orders buys B and sells S, the smaller side crosses whole, the
larger side min(B, S) pro rata, and |B - S| is left for the venue.

Allocation rule (``pro_rata``): largest remainder. Each weight w_i gets
floor(total * w_i / W); the lots left over go one each to the largest fractional
remainders, ties to the earlier weight. No share exceeds its weight when total <= W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SAFE = 2**62  # total * max weight below this cannot overflow int64


def pro_rata(total: int, weights: np.ndarray | list[int]) -> np.ndarray:
    """Split ``total`` lots over integer ``weights`` (see the module doc); int64 shares."""
    w = np.asarray(weights, dtype=np.int64)
    whole = int(w.sum())
    total = int(total)
    if total < 0 or total > whole or (w < 0).any():
        raise ValueError(f"cannot split {total} over weights summing to {whole}")
    if total == 0 or whole == 0:
        return np.zeros(len(w), np.int64)
    if total * int(w.max()) < _SAFE:
        prod = total * w
        share = prod // whole
        rem = prod - share * whole
        left = total - int(share.sum())
        if left:
            share[np.lexsort((np.arange(len(w)), -rem))[:left]] += 1
        return share
    # Huge quantities: the same rule in Python integers (no overflow).
    parts = [divmod(total * int(x), whole) for x in w.tolist()]
    shares = [q for q, _ in parts]
    left = total - sum(shares)
    for i in sorted(range(len(parts)), key=lambda i: (-parts[i][1], i))[:left]:
        shares[i] += 1
    return np.array(shares, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Crossed:
    """What ``cross`` did: fills per side as (member, lots, price) in the order they were
    made, and the lots each member has left."""

    buy_fills: list[tuple[int, int, float]]
    sell_fills: list[tuple[int, int, float]]
    buy_left: np.ndarray
    sell_left: np.ndarray


def _levels(prices: np.ndarray, descending: bool) -> list[np.ndarray]:
    """Member indices grouped by price, best level first, batch order within a level."""
    if len(prices) == 0:
        return []
    key = -prices if descending else prices
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order]) != 0) + 1
    return np.split(order, bounds)


def cross(
    buy_price: np.ndarray,
    buy_lots: np.ndarray,
    sell_price: np.ndarray,
    sell_lots: np.ndarray,
    mid: float,
) -> Crossed:
    """Cross buys against sells (see the module doc); a NaN mid prices each meeting at the
    middle of its two prices."""
    buy_left = np.array(buy_lots, np.int64)
    sell_left = np.array(sell_lots, np.int64)
    buys, sells = (
        _levels(np.asarray(buy_price, float), True),
        _levels(np.asarray(sell_price, float), False),
    )
    buy_fills: list[tuple[int, int, float]] = []
    sell_fills: list[tuple[int, int, float]] = []
    i = j = 0
    while i < len(buys) and j < len(sells):
        bp, sp = float(buy_price[buys[i][0]]), float(sell_price[sells[j][0]])
        if bp < sp:
            break
        qb, qs = int(buy_left[buys[i]].sum()), int(sell_left[sells[j]].sum())
        q = min(qb, qs)
        price = min(max(mid, sp), bp) if np.isfinite(mid) else (bp + sp) / 2
        for members, left, fills in (
            (buys[i], buy_left, buy_fills),
            (sells[j], sell_left, sell_fills),
        ):
            shares = pro_rata(q, left[members])
            for m, share in zip(members.tolist(), shares.tolist(), strict=True):
                if share:
                    fills.append((m, share, price))
            left[members] -= shares
        i += q == qb
        j += q == qs
    return Crossed(buy_fills, sell_fills, buy_left, sell_left)

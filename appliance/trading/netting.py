"""Netting of market intents per symbol, and exact pro-rata allocation.

All quantities here are integer lots, so every split is exact: the parts of a quantity
always sum to it, with no float drift.

Netting rule, per symbol, for one batch of MARKET intents: buys B and sells S (lots). The
smaller side is crossed entirely against the larger one, internally, at the mid of the
latest quote; the larger side's crossed quantity min(B, S) is shared among its intents pro
rata to their size; only |B - S| goes to the venue, as one order on the larger side, and
each of those intents owns the rest of its quantity in that order. Every intent of the
larger side thus gets the same fraction internally (a batch is simultaneous: no intent has
time priority over another).

Allocation rule (``pro_rata``): largest remainder. Each weight w_i gets
floor(total * w_i / W); the lots left over go one each to the largest fractional
remainders, ties to the earlier weight. No share exceeds its weight when total <= W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.model.records import Side

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
class NetResult:
    """The netting of one symbol's market intents.

    ``members`` are indices into the arrays given to ``net_market`` (batch order);
    ``internal`` and ``venue`` are, per member, the lots crossed internally and the lots
    it owns in the venue order (internal + venue = its quantity).
    """

    symbol: int
    side: Side  # side of the venue order; Side.NONE when buys and sells cancel out
    venue_lots: int
    members: np.ndarray
    internal: np.ndarray
    venue: np.ndarray


def net_market(symbols: np.ndarray, sides: np.ndarray, lots: np.ndarray) -> list[NetResult]:
    """Net MARKET intents per symbol (arrays aligned per intent; sides +1/-1, lots > 0)."""
    symbols = np.asarray(symbols)
    if len(symbols) == 0:
        return []
    sides = np.asarray(sides)
    lots = np.asarray(lots, dtype=np.int64)
    order = np.argsort(symbols, kind="stable")  # stable: batch order within a symbol
    uniq, starts = np.unique(symbols[order], return_index=True)
    out = []
    for s, members in zip(uniq.tolist(), np.split(order, starts[1:]), strict=True):
        q = lots[members]
        buy = sides[members] > 0
        b, s_ = int(q[buy].sum()), int(q[~buy].sum())
        internal = np.zeros(len(members), np.int64)
        big, small = (buy, ~buy) if b >= s_ else (~buy, buy)
        internal[small] = q[small]
        internal[big] = pro_rata(min(b, s_), q[big])
        side = Side.BUY if b > s_ else Side.SELL if s_ > b else Side.NONE
        out.append(NetResult(s, side, abs(b - s_), members, internal, q - internal))
    return out

"""The per-intent pre-trade rules of risk.py, compiled: one pass over a batch in numba.

NumPy over a batch costs a few microseconds per array operation whatever the batch's
size, and the checks take dozens of them: an engine call with one intent spent about
0.3 ms in them. These kernels loop over the batch once in compiled code instead. They
are the only implementation of the rules (risk.py documents them and calls these).

No ``fastmath``: comparisons with NaN (no quote, no mid) must stay false, as in IEEE.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

from appliance.model.records import OrderType, RejectReason, Side

_NONE = int(RejectReason.NONE)
_UNKNOWN_SYMBOL = int(RejectReason.UNKNOWN_SYMBOL)
_BAD_ORDER = int(RejectReason.BAD_ORDER)
_HALTED = int(RejectReason.HALTED)
_NO_MARKET = int(RejectReason.NO_MARKET)
_MAX_ORDER_QTY = int(RejectReason.MAX_ORDER_QTY)
_MAX_NOTIONAL = int(RejectReason.MAX_NOTIONAL)
_PRICE_BAND = int(RejectReason.PRICE_BAND)
_MAX_POSITION = int(RejectReason.MAX_POSITION)
_REDUCE_ONLY = int(RejectReason.REDUCE_ONLY)
_MAX_OPEN_ORDERS = int(RejectReason.MAX_OPEN_ORDERS)
_MARKET = int(OrderType.MARKET)
_LIMIT = int(OrderType.LIMIT)
_CANCEL = int(OrderType.CANCEL)
_BUY = int(Side.BUY)
_SELL = int(Side.SELL)
# Float noise allowed when flooring qty / lot (0.3 / 0.1 is 2.9999999999999996 lots).
LOT_EPS = 1e-9
# Relative slack on limit comparisons: positions are sums of lot-grid floats.
REL_EPS = 1e-9
BPS = 1e-4
_GROUP = types.UniTuple(types.int64, 5)  # (host, population, agent, symbol, side or 0)


@njit(cache=True)
def validate(symbol, side, otype, qty, limit, lot_sizes, reasons, lots):
    """risk.validate_intents, into ``reasons`` (uint8) and ``lots`` (int64)."""
    n_symbols = len(lot_sizes)
    for i in range(len(symbol)):
        s = symbol[i]
        reason = _NONE
        lot = lot_sizes[0]
        if s >= n_symbols:
            reason = _UNKNOWN_SYMBOL
        else:
            lot = lot_sizes[s]
        raw = np.floor(qty[i] / lot + LOT_EPS)
        sized = np.isfinite(raw) and raw >= 1 and raw < 2.0**53
        t = otype[i]
        good_side = side[i] == _BUY or side[i] == _SELL
        good = good_side and (
            t == _CANCEL
            or (sized and t == _MARKET)
            or (sized and t == _LIMIT and np.isfinite(limit[i]) and limit[i] > 0)
        )
        if not good and reason == _NONE:
            reason = _BAD_ORDER
        reasons[i] = reason
        lots[i] = np.int64(raw) if reason == _NONE and t != _CANCEL else 0


@njit(cache=True)
def _fits(used, key, base, qty, cap):
    """Whether ``qty`` more keeps the group ``key`` (at ``base`` before the batch, plus
    what ``used`` says its earlier passing intents took) within ``cap``, with the slack of
    REL_EPS."""
    tol = REL_EPS * max(cap if np.isfinite(cap) else 0.0, 1.0)
    return not used.get(key, base) + qty > cap + tol


@njit(cache=True)
def symbol_limits(
    out, otype, host, pop, agent, symbol, side, qty, ref, price, mid, position,
    open_buy, open_sell, open_orders, caps, halted, reduce_only,
):  # fmt: skip
    """RiskEngine.check into ``out`` (which holds the earlier rejects): one pass in batch
    order, so an intent is judged as if its agent's earlier passing intents were open
    orders already."""
    position_used = Dict.empty(key_type=_GROUP, value_type=types.float64)  # agent and side
    count = Dict.empty(key_type=_GROUP, value_type=types.float64)  # per agent
    limited = _REDUCE_ONLY if reduce_only else _MAX_POSITION
    for i in range(len(out)):
        if out[i] != _NONE or otype[i] == _CANCEL:
            continue
        if halted:
            out[i] = _HALTED
            continue
        s = symbol[i]
        band = caps[3, s]
        if not ref[i] > 0 or (np.isfinite(band) and not mid[i] > 0):
            out[i] = _NO_MARKET
            continue
        if qty[i] > caps[2, s] * (1 + REL_EPS):
            out[i] = _MAX_ORDER_QTY
            continue
        if qty[i] * ref[i] > caps[1, s] * (1 + REL_EPS):
            out[i] = _MAX_NOTIONAL
            continue
        if abs(price[i] - mid[i]) > band * BPS * mid[i] * (1 + REL_EPS):
            out[i] = _PRICE_BAND
            continue
        # Exposure in the intent's own direction before the batch, plus what its agent's
        # earlier passing intents of the batch add; reduce-only caps it at 0.
        agent_key = (np.int64(host[i]), np.int64(pop[i]), np.int64(agent[i]), np.int64(s),
                     np.int64(0))  # fmt: skip
        side_key = (agent_key[0], agent_key[1], agent_key[2], agent_key[3], np.int64(side[i]))
        base = position[i] + open_buy[i] if side[i] > 0 else open_sell[i] - position[i]
        cap = 0.0 if reduce_only else caps[0, s]
        opened = float(open_orders[i])
        if not _fits(position_used, side_key, base, qty[i], cap):
            out[i] = limited
        elif not _fits(count, agent_key, opened, 1.0, caps[4, s]):
            out[i] = _MAX_OPEN_ORDERS
        else:  # passes: its quantity and its order count are the next ones' to reckon with
            position_used[side_key] = position_used.get(side_key, base) + qty[i]
            count[agent_key] = count.get(agent_key, opened) + 1.0


@njit(cache=True)
def _fmax(a, b):
    """np.fmax: a NaN loses."""
    if a != a:
        return b
    if b != b:
        return a
    return max(a, b)


@njit(cache=True)
def _fmin(a, b):
    """np.fmin."""
    return -_fmax(-a, -b)


@njit(cache=True)
def prices(symbol, side, otype, limit_px, bid, ask, ref, own, best, mid):
    """Per intent: the price that values it (``ref``), its own price (``own``), the best
    price it accepts (``best``, routing's) and its symbol's mid; see PreTrade.check."""
    for i in range(len(symbol)):
        s = symbol[i]
        m = (bid[s] + ask[s]) / 2.0
        mid[i] = m
        touch = ask[s] if side[i] > 0 else bid[s]
        # A market order takes the touch and needs a two-sided quote.
        take = touch if np.isfinite(m) else np.nan
        lim = limit_px[i]
        if otype[i] == _LIMIT:
            # Valued at the highest price it can trade at: a buy at its limit; a sell at
            # the bid if that is above its limit (fmax: an unknown bid leaves the limit).
            ref[i] = _fmax(lim, bid[s]) if side[i] < 0 else lim
            own[i] = lim
            # The limit, bounded by the touch a marketable order would take.
            best[i] = _fmin(lim, touch) if side[i] > 0 else _fmax(lim, touch)
        else:
            ref[i] = take
            own[i] = take
            best[i] = take

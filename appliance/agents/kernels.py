"""numba kernels of the built-in target-position kinds (the CPU backend).

``run_target`` is the whole batch of one population: per symbol, per chunk of agents
(jit.BLOCK), every tick of the symbol in order: the kind's update, its decision on
decision ticks, then the gate. The kinds' per-tick work is in ``_ema``, ``_reversion``
and ``_breakout``; their NumPy references are the ``update`` methods of the kind modules,
which the tests hold them to, bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from appliance.agents import jit
from appliance.model.records import OrderType

EMA_CROSS, MEAN_REVERSION, BREAKOUT = 0, 1, 2


@njit(cache=True)
def _ema(lo, hi, mid, seen, decide_now, new, F, ints):
    alpha_f, alpha_s, qty, fast, slow = F[0], F[1], F[2], F[3], F[4]
    warmup = ints[0]
    if seen == 0:  # start the EMAs at the first mid: the recursion from there is exact
        for j in range(lo, hi):
            fast[j] = mid
            slow[j] = mid
    else:
        for j in range(lo, hi):
            fast[j] += alpha_f[j] * (mid - fast[j])
            slow[j] += alpha_s[j] * (mid - slow[j])
    if decide_now:
        for j in range(lo, hi):
            d = fast[j] - slow[j]
            s = 1.0 if d > 0.0 else (-1.0 if d < 0.0 else 0.0)
            new[j - lo] = s * qty[j] if seen + 1 >= warmup[j] else np.nan


@njit(cache=True)
def _reversion(lo, hi, mid, seen, decide_now, new, F, ints, target):
    alpha, entry, exit_, qty, mean, var = F[0], F[1], F[2], F[3], F[4], F[5]
    warmup = ints[0]
    for j in range(lo, hi):
        z = 0.0
        if seen == 0:
            mean[j] = mid
            var[j] = 0.0
        else:
            diff = mid - mean[j]
            v = var[j]
            if v > 0.0:
                z = diff / np.sqrt(v)
            incr = alpha[j] * diff
            mean[j] = mean[j] + incr
            var[j] = (1.0 - alpha[j]) * (v + diff * incr)
        if decide_now:
            cur = target[j]
            t = np.nan  # hold
            if seen + 1 < warmup[j]:
                pass
            elif z >= entry[j]:
                t = -qty[j]
            elif z <= -entry[j]:
                t = qty[j]
            elif (cur > 0.0 and z >= -exit_[j]) or (cur < 0.0 and z <= exit_[j]):
                t = 0.0
            new[j - lo] = t


@njit(cache=True)
def _breakout(lo, hi, mid, tl, decide_now, new, F, ints, X):
    if not decide_now:
        return
    qty = F[0]
    channel = ints[0]
    for j in range(lo, hi):
        c = channel[j]
        high = X[2 * c, tl]
        low = X[2 * c + 1, tl]
        t = np.nan  # inside the channel, or the channel not full yet: hold
        if mid > high:
            t = qty[j]
        elif mid < low:
            t = -qty[j]
        new[j - lo] = t


@njit(cache=True)
def run_target(
    kind, offsets, order, mids, starts, stops, group_seen, per_tick, tick_base, now_ns,
    F, ints, X, target, decided, position, pending_qty, pending, retry_after, new,
    out_agent, out_side, out_qty, out_tick,
):  # fmt: skip
    """One batch of a target-position population; (intents written, signals)."""
    k = 0
    signals = 0
    for g in range(len(starts)):
        t0 = offsets[g]
        t1 = offsets[g + 1]
        if t1 == t0:
            continue
        for lo in range(starts[g], stops[g], jit.BLOCK):
            hi = min(lo + jit.BLOCK, stops[g])
            for t in range(t0, t1):
                mid = mids[t]
                seen = group_seen[g] + (t - t0)
                decide_now = per_tick or t == t1 - 1
                if kind == EMA_CROSS:
                    _ema(lo, hi, mid, seen, decide_now, new, F, ints)
                elif kind == MEAN_REVERSION:
                    _reversion(lo, hi, mid, seen, decide_now, new, F, ints, target)
                else:
                    _breakout(lo, hi, mid, t - t0, decide_now, new, F, ints, X)
                if decide_now:
                    signals += jit.decide(lo, hi, new, tick_base + order[t], target, decided)
            k = jit.gate(
                lo, hi, order[t1 - 1], tick_base, now_ns, target, decided, position,
                pending_qty, pending, retry_after, out_agent, out_side, out_qty, out_tick, k,
            )  # fmt: skip
    return k, signals


@njit(cache=True)
def breakout_channels(
    offsets, mids, group_seen, ch_group, ch_window, history, dq_idx, dq_val, dq_head, dq_len,
    X,
):  # fmt: skip
    """High and low of the previous ``window`` mids of every channel at every tick of the
    batch, into ``X`` rows 2c / 2c+1 (NaN while fewer mids were seen), and the history.

    A channel is one (symbol, window) pair, computed once for every agent that uses it.
    Each keeps two monotonic deques (rows 2c: decreasing values for the high, 2c+1:
    increasing for the low) of (tick number, mid), ring buffers of ``window + 1`` slots
    starting at ``dq_head``: O(1) amortised per tick and channel. ``history`` (one ring
    of the longest window per symbol) holds the mids themselves for snapshots.
    """
    depth = history.shape[1]
    for c in range(len(ch_group)):
        g = ch_group[c]
        w = ch_window[c]
        cap = w + 1
        for t in range(offsets[g], offsets[g + 1]):
            n = group_seen[g] + (t - offsets[g])  # mids of the symbol seen before this one
            mid = mids[t]
            tl = t - offsets[g]
            for side in range(2):
                r = 2 * c + side
                # Drop what left the window (tick numbers below n - w).
                while dq_len[r] > 0 and dq_idx[r, dq_head[r]] < n - w:
                    dq_head[r] = (dq_head[r] + 1) % cap
                    dq_len[r] -= 1
                X[r, tl] = dq_val[r, dq_head[r]] if n >= w else np.nan
                # Keep the deque monotonic: a new mid evicts the ones it dominates.
                while dq_len[r] > 0:
                    back = (dq_head[r] + dq_len[r] - 1) % cap
                    v = dq_val[r, back]
                    if (v <= mid) if side == 0 else (v >= mid):
                        dq_len[r] -= 1
                    else:
                        break
                slot = (dq_head[r] + dq_len[r]) % cap
                dq_idx[r, slot] = n
                dq_val[r, slot] = mid
                dq_len[r] += 1
    for g in range(len(offsets) - 1):
        for t in range(offsets[g], offsets[g + 1]):
            n = group_seen[g] + (t - offsets[g])
            history[g, n % depth] = mids[t]


# ---- market making ----------------------------------------------------------------------
# Quote states per side, plan codes, rows of F / I (market_making.py names them).
IDLE, SENT, RESTING, CANCELLING = 0, 1, 2, 3
NONE, PLACE, CANCEL = 0, 1, 2
# Slack when putting a quote on the price grid: 99.9 / 0.01 is 9989.999999999998.
ROUNDING = 1e-9
_LIMIT, _CANCEL_ORDER = int(OrderType.LIMIT), int(OrderType.CANCEL)


@njit(cache=True)
def mm_decide(j, mid, best_bid, best_ask, at, F, ints, position):
    """One agent's quotes at one tick: the plan per side (place at a price, cancel, none);
    returns how many plans changed (signals)."""
    half, skew, requote, qty, max_inv, tick = F[0, j], F[1, j], F[2, j], F[3, j], F[4, j], F[5, j]
    pos = position[j]
    r = mid * (1.0 - skew * (pos / max_inv))  # reservation price: skewed against inventory
    px_bid = min(np.floor(r * (1.0 - half) / tick + ROUNDING) * tick, best_ask - tick)
    px_ask = max(np.ceil(r * (1.0 + half) / tick - ROUNDING) * tick, best_bid + tick)
    room = max_inv * 1e-9
    changed = 0
    for s in range(2):
        can = (pos + qty <= max_inv + room) if s == 0 else (pos - qty >= -max_inv - room)
        px = px_bid if s == 0 else px_ask
        state = ints[s, j]
        plan = NONE
        if state == IDLE and can and px > 0.0:
            plan = PLACE
        elif state == RESTING:
            quoted = F[6 + s, j]
            if not can or not (abs(mid - quoted) <= requote * quoted):
                plan = CANCEL
        price = px if plan == PLACE else 0.0
        if plan != ints[2 + s, j] or price != F[8 + s, j]:
            changed += 1
            ints[4 + s, j] = at
        ints[2 + s, j] = plan
        F[8 + s, j] = price
        F[10 + s, j] = mid
    return changed


@njit(cache=True)
def mm_gate(lo, hi, last_i, tick_base, now_ns, F, ints, retry_after, out_agent, out_side,
            out_qty, out_type, out_price, out_tick, k):  # fmt: skip
    """Carry out the plans of agents lo..hi: a LIMIT or a CANCEL per side, bid first."""
    for j in range(lo, hi):
        if retry_after[j] > now_ns:
            continue
        for s in range(2):
            plan = ints[2 + s, j]
            if plan == NONE:
                continue
            out_agent[k] = j
            out_side[k] = 1 if s == 0 else -1
            since = ints[4 + s, j] - tick_base
            out_tick[k] = since if since >= 0 else last_i
            if plan == PLACE:
                out_qty[k] = F[3, j]
                out_type[k] = _LIMIT
                out_price[k] = F[8 + s, j]
                ints[s, j] = SENT
                F[6 + s, j] = F[10 + s, j]
            else:
                out_qty[k] = 0.0
                out_type[k] = _CANCEL_ORDER
                out_price[k] = 0.0
                ints[s, j] = CANCELLING
            ints[2 + s, j] = NONE
            k += 1
    return k


@njit(cache=True)
def run_market_making(offsets, order, mids, bid, ask, starts, stops, group_seen, per_tick,
                      tick_base, now_ns, F, ints, position, retry_after, out_agent, out_side,
                      out_qty, out_type, out_price, out_tick):  # fmt: skip
    """One batch of a market-making population; (intents written, signals)."""
    k = 0
    signals = 0
    for g in range(len(starts)):
        t0 = offsets[g]
        t1 = offsets[g + 1]
        if t1 == t0:
            continue
        for t in range(t0, t1):
            if not (per_tick or t == t1 - 1):
                continue
            i = order[t]
            seen = group_seen[g] + (t - t0)
            for j in range(starts[g], stops[g]):
                if seen + 1 >= ints[6, j]:
                    signals += mm_decide(
                        j, mids[t], bid[i], ask[i], tick_base + i, F, ints, position
                    )
        k = mm_gate(starts[g], stops[g], order[t1 - 1], tick_base, now_ns, F, ints, retry_after,
                    out_agent, out_side, out_qty, out_type, out_price, out_tick, k)  # fmt: skip
    return k, signals


@njit(cache=True)
def mm_reports(agent, kind, side, fill_qty, reason, final, ts_ns, backoff_ns, cooldown_ns,
               position, ints, retry_after, counts, by_reason):  # fmt: skip
    """Apply REPORT columns, in order, to agents with at most one order per side.

    Per side: FILL moves the position (final: the quote is gone); ACK of the quote makes
    it resting; ACK with final = 1 ends a cancel; CANCEL ends the quote; REJECT of a
    cancel leaves the quote resting, of a quote ends it, and starts the backoff.
    """
    n_agents = len(position)
    for r in range(len(agent)):
        a = agent[r]
        k = kind[r]
        s = side[r]
        if a >= n_agents or not (s == 1 or s == -1):
            counts[jit.BAD] += 1
            continue
        row = 0 if s == 1 else 1
        state = ints[row, a]
        if k == jit.FILL:
            q = fill_qty[r]
            if not (q > 0.0 and q < np.inf):
                counts[jit.BAD] += 1
                continue
            position[a] += s * q
            counts[jit.FILLS] += 1
            if final[r]:
                ints[row, a] = IDLE
                if cooldown_ns > 0:
                    retry_after[a] = ts_ns[r] + cooldown_ns
        elif k == jit.ACK:
            counts[jit.ACKS] += 1
            if final[r] and state == CANCELLING:
                ints[row, a] = IDLE
            elif not final[r] and state == SENT:
                ints[row, a] = RESTING
        elif k == jit.CANCEL:
            counts[jit.CANCELS] += 1
            ints[row, a] = IDLE
        elif k == jit.REJECT:
            counts[jit.REJECTS] += 1
            by_reason[min(reason[r], len(by_reason) - 1)] += 1
            ints[row, a] = RESTING if state == CANCELLING else IDLE
            retry_after[a] = ts_ns[r] + backoff_ns

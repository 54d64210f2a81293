"""Compiled helpers shared by the numba kernels of every kind (see compute.py).

The kernels loop over the ticks of a batch and over agents in compiled code, without
temporaries per tick. Agents of one symbol are a contiguous block; kernels take them in
chunks of BLOCK agents and run every tick of the symbol over a chunk before the next one,
so the chunk's state stays in the L1 cache whatever the population size, and the loop over
agents (no branches, no calls) compiles to SIMD code.

No ``fastmath``: the kernels must give bit for bit the signals of the NumPy reference,
and reassociating the EMA or z-score arithmetic would not.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from appliance.model.records import ReportKind

# Agents per chunk: 512 agents x ~10 state arrays x 8 bytes stay within a 48 KiB L1.
BLOCK = 512
# Exposure differences below this many base units are float noise from adding fills,
# not a wish to trade.
QTY_EPSILON = 1e-12

# Slots of the report counters array.
ACKS, FILLS, CANCELS, REJECTS, BAD = range(5)
# Report kinds.
ACK, FILL, CANCEL, REJECT = (
    int(ReportKind.ACK),
    int(ReportKind.FILL),
    int(ReportKind.CANCEL),
    int(ReportKind.REJECT),
)


@njit(cache=True)
def group_ticks(symbol, bid, ask, group_of, offsets, cursor, order, mids):
    """Sort the batch's usable ticks by group, keeping tick order within each group.

    Ticks of group g end up in ``order[offsets[g]:offsets[g + 1]]`` (batch indexes) with
    their mids in ``mids``. A tick is usable when its symbol belongs to a group and its
    quote is two-sided and sound (a one-sided or broken quote has no mid).
    """
    n_groups = len(offsets) - 1
    offsets[:] = 0
    for i in range(len(symbol)):
        b = bid[i]
        a = ask[i]
        if group_of[symbol[i]] >= 0 and b > 0.0 and a > 0.0 and b < np.inf and a < np.inf:
            offsets[group_of[symbol[i]] + 1] += 1
    for g in range(n_groups):
        offsets[g + 1] += offsets[g]
        cursor[g] = offsets[g]
    for i in range(len(symbol)):
        b = bid[i]
        a = ask[i]
        g = group_of[symbol[i]]
        if g >= 0 and b > 0.0 and a > 0.0 and b < np.inf and a < np.inf:
            order[cursor[g]] = i
            mids[cursor[g]] = (b + a) * 0.5
            cursor[g] += 1


@njit(cache=True)
def decide(lo, hi, new, at, target, decided):
    """Record the targets ``new[0:hi-lo]`` of agents lo..hi decided at tick ``at``.

    NaN means no opinion (the target stays). Returns how many targets changed: the
    signals of this tick."""
    changed = 0
    for j in range(lo, hi):
        t = new[j - lo]
        old = target[j]
        c = (t != old) and (t == t)
        target[j] = t if c else old
        decided[j] = at if c else decided[j]
        changed += c
    return changed


@njit(cache=True)
def gate(
    lo, hi, last_i, tick_base, now_ns,
    target, decided, position, pending_qty, pending, retry_after,
    out_agent, out_side, out_qty, out_tick, k,
):  # fmt: skip
    """The intents of agents lo..hi after their symbol's last tick of the batch.

    An agent sends target - (position + pending) when that is not zero, it has nothing
    in flight and no backoff runs. The intent carries the tick of the agent's last
    signal when that was in this batch, else the batch's last tick of its symbol (the
    agent decided there that it could send what it wished earlier). Returns the new
    number of intents ``k``.
    """
    for j in range(lo, hi):
        t = target[j]
        if pending[j] or retry_after[j] > now_ns or t != t:
            continue
        delta = t - (position[j] + pending_qty[j])
        if abs(delta) <= QTY_EPSILON:
            continue
        out_agent[k] = j
        out_side[k] = 1 if delta > 0 else -1
        out_qty[k] = abs(delta)
        d = decided[j] - tick_base
        out_tick[k] = d if d >= 0 else last_i
        pending[j] = True
        pending_qty[j] = delta
        k += 1
    return k


@njit(cache=True)
def target_reports(
    agent, kind, side, fill_qty, reason, final, ts_ns, backoff_ns, cooldown_ns,
    position, pending_qty, pending, retry_after, counts, by_reason,
):  # fmt: skip
    """Apply REPORT columns, in order, to agents that hold one intent at a time.

    FILLs move the position (and the quantity still pending); a final report clears the
    agent's pending intent; a REJECT starts the reject backoff, any other final report
    the cooldown. Reports naming no agent of the population, or FILLs with a bad side or
    quantity, are counted as bad and ignored. The work is per report: nothing here walks
    the population.
    """
    n_agents = len(position)
    for r in range(len(agent)):
        a = agent[r]
        k = kind[r]
        if a >= n_agents:
            counts[BAD] += 1
            continue
        if k == FILL:
            s = side[r]
            q = fill_qty[r]
            if not ((s == 1 or s == -1) and q > 0.0 and q < np.inf):
                counts[BAD] += 1
                continue
            position[a] += s * q
            pending_qty[a] -= s * q
            counts[FILLS] += 1
        elif k == ACK:
            counts[ACKS] += 1
        elif k == CANCEL:
            counts[CANCELS] += 1
        elif k == REJECT:
            counts[REJECTS] += 1
            by_reason[min(reason[r], len(by_reason) - 1)] += 1
            retry_after[a] = ts_ns[r] + backoff_ns
        if final[r]:
            pending[a] = False
            pending_qty[a] = 0.0
            if k != REJECT and cooldown_ns > 0:
                retry_after[a] = ts_ns[r] + cooldown_ns

"""CUDA kernels of the built-in kinds (the cupy backend) and their launchers.

One thread per agent. A batch is one launch: the host sorts the batch's usable ticks by
symbol (jit.group_ticks, as the CPU kernels do) and uploads them; each thread loads its
agent's state into registers, runs every tick of its symbol in order, decides on each,
stores the state back and runs the gate; intents go to output arrays through an atomic
counter (so the host sorts them by agent). Reports are applied by a one-thread kernel, in
order, touching only the agents they name.

Compiled with ``--fmad=false`` (compute.py): a fused multiply-add rounds differently from the
separate multiply and add of the CPU kernels, and the backends must agree bit for bit.
The same source builds for the CPU with a C++ compiler (tests/agents/cuda_cpu.py), which
is how the tests run it on machines without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from appliance.agents.compute import to_host
from appliance.model.records import OrderType, ReportKind

THREADS = 128

COMMON = r"""
#define DM_NAN __longlong_as_double(0x7ff8000000000000LL)
#define QTY_EPSILON 1e-12
#define ROW(A, r) ((A) + (long long)(r) * n_agents)
#define R_ACK %(ack)d
#define R_FILL %(fill)d
#define R_REJECT %(reject)d
#define R_CANCEL %(cancel)d

__device__ inline int tk_decide(int j, double t, long long at, double* target,
                                long long* decided) {
    double old = target[j];
    if (t != old && t == t) {
        target[j] = t;
        decided[j] = at;
        return 1;
    }
    return 0;
}

__device__ inline long long out_slot(unsigned long long* counters) {
    return (long long)atomicAdd(&counters[0], 1ULL);
}

#define TARGET_ARGS                                                                     \
    const long long* off, const long long* order, const double* mids,                   \
    const int* agent_group, const long long* group_seen, int n_agents, int per_tick,    \
    long long tick_base, long long now_ns, double* F, const long long* I,                \
    const double* X, long long x_cols, double* target, long long* decided,              \
    const double* position, double* pending_qty, bool* pending,                         \
    const long long* retry_after, unsigned long long* counters, long long* out_agent,   \
    signed char* out_side, double* out_qty, long long* out_tick

#define TARGET_PROLOGUE                                                                 \
    int j = blockIdx.x * blockDim.x + threadIdx.x;                                      \
    if (j >= n_agents) return;                                                          \
    int g = agent_group[j];                                                             \
    long long t0 = off[g], t1 = off[g + 1];                                             \
    if (t1 == t0) return;                                                               \
    unsigned long long signals = 0;

/* The gate of jit.gate for agent j, after its symbol's last tick. */
#define TARGET_EPILOGUE                                                                 \
    if (signals) atomicAdd(&counters[1], signals);                                      \
    double want = target[j];                                                            \
    if (pending[j] || retry_after[j] > now_ns || want != want) return;                  \
    double delta = want - (position[j] + pending_qty[j]);                               \
    if (fabs(delta) <= QTY_EPSILON) return;                                             \
    long long k = out_slot(counters);                                                   \
    out_agent[k] = j;                                                                   \
    out_side[k] = delta > 0.0 ? 1 : -1;                                                 \
    out_qty[k] = fabs(delta);                                                           \
    long long since = decided[j] - tick_base;                                           \
    out_tick[k] = since >= 0 ? since : order[t1 - 1];                                   \
    pending[j] = true;                                                                  \
    pending_qty[j] = delta;
"""

TARGET = r"""
extern "C" __global__ void ema_cross(TARGET_ARGS) {
    TARGET_PROLOGUE
    double a_fast = ROW(F, 0)[j], a_slow = ROW(F, 1)[j], qty = ROW(F, 2)[j];
    double fast = ROW(F, 3)[j], slow = ROW(F, 4)[j];
    long long warmup = ROW(I, 0)[j];
    for (long long t = t0; t < t1; ++t) {
        double mid = mids[t];
        long long seen = group_seen[g] + (t - t0);
        if (seen == 0) {
            fast = mid;
            slow = mid;
        } else {
            fast += a_fast * (mid - fast);
            slow += a_slow * (mid - slow);
        }
        if (per_tick || t == t1 - 1) {
            double d = fast - slow;
            double s = d > 0.0 ? 1.0 : (d < 0.0 ? -1.0 : 0.0);
            double t_new = seen + 1 >= warmup ? s * qty : DM_NAN;
            signals += tk_decide(j, t_new, tick_base + order[t], target, decided);
        }
    }
    ROW(F, 3)[j] = fast;
    ROW(F, 4)[j] = slow;
    TARGET_EPILOGUE
}

extern "C" __global__ void mean_reversion(TARGET_ARGS) {
    TARGET_PROLOGUE
    double alpha = ROW(F, 0)[j], entry = ROW(F, 1)[j], exit_ = ROW(F, 2)[j];
    double qty = ROW(F, 3)[j], mean = ROW(F, 4)[j], var = ROW(F, 5)[j];
    long long warmup = ROW(I, 0)[j];
    for (long long t = t0; t < t1; ++t) {
        double mid = mids[t];
        long long seen = group_seen[g] + (t - t0);
        double z = 0.0;
        if (seen == 0) {
            mean = mid;
            var = 0.0;
        } else {
            double diff = mid - mean;
            if (var > 0.0) z = diff / sqrt(var);
            double incr = alpha * diff;
            mean = mean + incr;
            var = (1.0 - alpha) * (var + diff * incr);
        }
        if (per_tick || t == t1 - 1) {
            double cur = target[j];
            double t_new = DM_NAN;
            if (seen + 1 < warmup) {
            } else if (z >= entry) {
                t_new = -qty;
            } else if (z <= -entry) {
                t_new = qty;
            } else if (cur > 0.0 && z >= -exit_) {
                t_new = 0.0;
            } else if (cur < 0.0 && z <= exit_) {
                t_new = 0.0;
            }
            signals += tk_decide(j, t_new, tick_base + order[t], target, decided);
        }
    }
    ROW(F, 4)[j] = mean;
    ROW(F, 5)[j] = var;
    TARGET_EPILOGUE
}

extern "C" __global__ void breakout(TARGET_ARGS) {
    TARGET_PROLOGUE
    double qty = ROW(F, 0)[j];
    long long c = ROW(I, 0)[j];
    for (long long t = t0; t < t1; ++t) {
        if (!(per_tick || t == t1 - 1)) continue;
        double mid = mids[t];
        double high = X[2 * c * x_cols + (t - t0)];
        double low = X[(2 * c + 1) * x_cols + (t - t0)];
        double t_new = DM_NAN;
        if (mid > high) t_new = qty;
        else if (mid < low) t_new = -qty;
        signals += tk_decide(j, t_new, tick_base + order[t], target, decided);
    }
    TARGET_EPILOGUE
}

/* jit.target_reports, in one thread: reports apply in order. */
extern "C" __global__ void target_reports(
    const long long* agent, const unsigned char* kind, const signed char* side,
    const double* fill_qty, const unsigned char* reason, const unsigned char* final_,
    const long long* ts_ns, int n_reports, int n_agents, long long backoff_ns,
    long long cooldown_ns, double* position, double* pending_qty, bool* pending,
    long long* retry_after, long long* counts, long long* by_reason, int n_reasons) {
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    for (int r = 0; r < n_reports; ++r) {
        long long a = agent[r];
        int k = kind[r];
        if (a >= n_agents) { counts[4] += 1; continue; }
        if (k == R_FILL) {
            int s = side[r];
            double q = fill_qty[r];
            if (!((s == 1 || s == -1) && q > 0.0 && q - q == 0.0)) { counts[4] += 1; continue; }
            position[a] += s * q;
            pending_qty[a] -= s * q;
            counts[1] += 1;
        } else if (k == R_ACK) {
            counts[0] += 1;
        } else if (k == R_CANCEL) {
            counts[2] += 1;
        } else if (k == R_REJECT) {
            counts[3] += 1;
            by_reason[reason[r] < n_reasons - 1 ? reason[r] : n_reasons - 1] += 1;
            retry_after[a] = ts_ns[r] + backoff_ns;
        }
        if (final_[r]) {
            pending[a] = false;
            pending_qty[a] = 0.0;
            if (k != R_REJECT && cooldown_ns > 0) retry_after[a] = ts_ns[r] + cooldown_ns;
        }
    }
}
"""

MARKET_MAKING = r"""
#define IDLE 0
#define SENT 1
#define RESTING 2
#define CANCELLING 3
#define PLAN_NONE 0
#define PLAN_PLACE 1
#define PLAN_CANCEL 2
#define F_(r) ROW(F, r)[j]
#define I_(r) ROW(I, r)[j]

/* kernels.run_market_making for agent j: mm_decide on its decision ticks, then mm_gate. */
extern "C" __global__ void market_making(
    const long long* off, const long long* order, const double* mids, const double* bids,
    const double* asks, const int* agent_group, const long long* group_seen, int n_agents,
    int per_tick, long long tick_base, long long now_ns, double* F, long long* I,
    const double* position, const long long* retry_after, unsigned long long* counters,
    long long* out_agent, signed char* out_side, double* out_qty, unsigned char* out_type,
    double* out_price, long long* out_tick, int limit_type, int cancel_type) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n_agents) return;
    int g = agent_group[j];
    long long t0 = off[g], t1 = off[g + 1];
    if (t1 == t0) return;
    unsigned long long signals = 0;
    double half = F_(0), skew = F_(1), requote = F_(2), qty = F_(3), max_inv = F_(4);
    double tick = F_(5), pos = position[j], room = max_inv * 1e-9;
    for (long long t = t0; t < t1; ++t) {
        if (!(per_tick || t == t1 - 1)) continue;
        long long seen = group_seen[g] + (t - t0);
        if (seen + 1 < I_(6)) continue;
        double mid = mids[t];
        double r = mid * (1.0 - skew * (pos / max_inv));
        double px_bid = fmin(floor(r * (1.0 - half) / tick + 1e-9) * tick, asks[t] - tick);
        double px_ask = fmax(ceil(r * (1.0 + half) / tick - 1e-9) * tick, bids[t] + tick);
        for (int s = 0; s < 2; ++s) {
            bool can = s == 0 ? pos + qty <= max_inv + room : pos - qty >= -max_inv - room;
            double px = s == 0 ? px_bid : px_ask;
            long long state = I_(s);
            long long plan = PLAN_NONE;
            if (state == IDLE && can && px > 0.0) {
                plan = PLAN_PLACE;
            } else if (state == RESTING) {
                double quoted = F_(6 + s);
                if (!can || !(fabs(mid - quoted) <= requote * quoted)) plan = PLAN_CANCEL;
            }
            double price = plan == PLAN_PLACE ? px : 0.0;
            if (plan != I_(2 + s) || price != F_(8 + s)) {
                signals += 1;
                I_(4 + s) = tick_base + order[t];
            }
            I_(2 + s) = plan;
            F_(8 + s) = price;
            F_(10 + s) = mid;
        }
    }
    if (signals) atomicAdd(&counters[1], signals);
    if (retry_after[j] > now_ns) return;
    for (int s = 0; s < 2; ++s) {
        long long plan = I_(2 + s);
        if (plan == PLAN_NONE) continue;
        long long k = out_slot(counters);
        out_agent[k] = j;
        out_side[k] = s == 0 ? 1 : -1;
        long long since = I_(4 + s) - tick_base;
        out_tick[k] = since >= 0 ? since : order[t1 - 1];
        if (plan == PLAN_PLACE) {
            out_qty[k] = qty;
            out_type[k] = (unsigned char)limit_type;
            out_price[k] = F_(8 + s);
            I_(s) = SENT;
            F_(6 + s) = F_(10 + s);
        } else {
            out_qty[k] = 0.0;
            out_type[k] = (unsigned char)cancel_type;
            out_price[k] = 0.0;
            I_(s) = CANCELLING;
        }
        I_(2 + s) = PLAN_NONE;
    }
}

/* kernels.mm_reports, in one thread. */
extern "C" __global__ void mm_reports(
    const long long* agent, const unsigned char* kind, const signed char* side,
    const double* fill_qty, const unsigned char* reason, const unsigned char* final_,
    const long long* ts_ns, int n_reports, int n_agents, long long backoff_ns,
    long long cooldown_ns, double* position, long long* I, long long* retry_after,
    long long* counts, long long* by_reason, int n_reasons) {
    if (blockIdx.x * blockDim.x + threadIdx.x != 0) return;
    for (int r = 0; r < n_reports; ++r) {
        long long a = agent[r];
        int k = kind[r], s = side[r];
        if (a >= n_agents || !(s == 1 || s == -1)) { counts[4] += 1; continue; }
        long long* state = I + (long long)(s == 1 ? 0 : 1) * n_agents + a;
        if (k == R_FILL) {
            double q = fill_qty[r];
            if (!(q > 0.0 && q - q == 0.0)) { counts[4] += 1; continue; }
            position[a] += s * q;
            counts[1] += 1;
            if (final_[r]) {
                *state = IDLE;
                if (cooldown_ns > 0) retry_after[a] = ts_ns[r] + cooldown_ns;
            }
        } else if (k == R_ACK) {
            counts[0] += 1;
            if (final_[r] && *state == CANCELLING) *state = IDLE;
            else if (!final_[r] && *state == SENT) *state = RESTING;
        } else if (k == R_CANCEL) {
            counts[2] += 1;
            *state = IDLE;
        } else if (k == R_REJECT) {
            counts[3] += 1;
            by_reason[reason[r] < n_reasons - 1 ? reason[r] : n_reasons - 1] += 1;
            *state = *state == CANCELLING ? RESTING : IDLE;
            retry_after[a] = ts_ns[r] + backoff_ns;
        }
    }
}
"""


def source(body: str) -> str:
    """COMMON with the report kinds filled in, then ``body``."""
    kinds = {k.name.lower(): int(k) for k in ReportKind}
    return COMMON % kinds + body


class CudaKernels:
    """Device buffers and launches of one population of a built-in kind."""

    def __init__(self, pop: Any, report_kernel: str) -> None:
        self.pop = pop
        xp = pop.xp
        code = source(TARGET + MARKET_MAKING)
        self.step_kernel = pop.backend.kernel(code, pop.cuda_name)
        self.report_kernel = pop.backend.kernel(code, report_kernel)
        self.agent_group = xp.asarray(pop.agent_group)
        cap = len(pop._out_agent)
        self.counters = xp.zeros(2, dtype=np.uint64)
        self.out = {
            name: xp.zeros(cap, getattr(pop, f"_out_{name}").dtype)
            for name in ("agent", "side", "qty", "type", "price", "tick")
        }
        self.grid = ((pop.n_agents + THREADS - 1) // THREADS,)

    def _launch(self, head: tuple, tail: tuple, names: tuple[str, ...]) -> tuple[int, int]:
        """Run the step kernel with ``head`` args, the counters and output arrays, then
        ``tail``; copy the intents it wrote to the population's host buffers."""
        self.counters.fill(0)
        outs = tuple(self.out[n] for n in names)
        self.step_kernel(self.grid, (THREADS,), (*head, self.counters, *outs, *tail))
        k, signals = (int(v) for v in to_host(self.counters))
        for name in names:
            getattr(self.pop, f"_out_{name}")[:k] = to_host(self.out[name][:k])
        return k, signals

    def _ticks(self, offsets: np.ndarray, order: np.ndarray, mids: np.ndarray) -> tuple:
        xp = self.pop.xp
        n = int(offsets[-1])
        return xp.asarray(offsets), xp.asarray(order[:n]), xp.asarray(mids[:n])

    def run_target(self, offsets, order, mids, x, now_ns, tick_base) -> tuple[int, int]:
        """One batch of a target-position kind (one launch)."""
        pop, xp = self.pop, self.pop.xp
        x = np.ascontiguousarray(x)
        head = (
            *self._ticks(offsets, order, mids), self.agent_group, xp.asarray(pop.group_seen),
            np.int32(pop.n_agents), np.int32(pop.params.decide == "tick"), np.int64(tick_base),
            np.int64(now_ns), pop.F, pop.I, xp.asarray(x), np.int64(x.shape[1]), pop.target,
            pop.decided, pop.position, pop.pending_qty, pop.pending, pop.retry_after_ns,
        )  # fmt: skip
        return self._launch(head, (), ("agent", "side", "qty", "tick"))

    def run_market_making(self, offsets, order, mids, bid, ask, now_ns, tick_base):
        """One batch of a market-making population (one launch)."""
        pop, xp = self.pop, self.pop.xp
        idx = order[: int(offsets[-1])]
        head = (
            *self._ticks(offsets, order, mids), xp.asarray(bid[idx]), xp.asarray(ask[idx]),
            self.agent_group, xp.asarray(pop.group_seen), np.int32(pop.n_agents),
            np.int32(pop.params.decide == "tick"), np.int64(tick_base), np.int64(now_ns),
            pop.F, pop.I, pop.position, pop.retry_after_ns,
        )  # fmt: skip
        tail = (np.int32(OrderType.LIMIT), np.int32(OrderType.CANCEL))
        return self._launch(head, tail, ("agent", "side", "qty", "type", "price", "tick"))

    def reports(
        self, cols: tuple[np.ndarray, ...], args: tuple[int, int], state: tuple,
        counts: np.ndarray, by_reason: np.ndarray,
    ) -> None:  # fmt: skip
        """Apply report columns in one thread; ``state``: the kind's arrays, in the order
        of its report kernel's parameters."""
        pop, xp = self.pop, self.pop.xp
        d_counts, d_reasons = xp.asarray(counts), xp.asarray(by_reason)
        self.report_kernel(
            (1,),
            (1,),
            (
                *(xp.asarray(c) for c in cols), np.int32(len(cols[0])), np.int32(pop.n_agents),
                np.int64(args[0]), np.int64(args[1]), *state, d_counts, d_reasons,
                np.int32(len(by_reason)),
            ),
        )  # fmt: skip
        counts[:] = to_host(d_counts)
        by_reason[:] = to_host(d_reasons)

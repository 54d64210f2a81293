"""Every backend gives the reference's signals and intents on the same ticks."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.agents import make_population
from appliance.agents.compute import available, resolve, to_host
from appliance.model.records import ReportKind
from tests.agents.conftest import make_report
from tests.agents.cuda_cpu import CPU_CUDA, compiler

KINDS = {
    "ema_cross": {"fast": [2, 5], "slow": [10, 30]},
    "mean_reversion": {"lookback": [5, 30], "entry": [0.8, 2.0], "exit": 0.2},
    "breakout": {"window": [3, 20]},
    "market_making": {"qty": 1.0, "max_inventory": 3.0, "requote_bps": [0.5, 3.0]},
}
BACKENDS = [
    "numba",
    pytest.param(
        CPU_CUDA,
        id="cuda-source-on-cpu",
        marks=pytest.mark.skipif(compiler() is None, reason="no C++ compiler"),
    ),
    pytest.param(
        "cupy", marks=pytest.mark.skipif(available()["cupy"] != "", reason="no usable GPU")
    ),
]


def run(kind, backend, ticks, decide, batch=250):
    """Step a population over ``ticks`` in batches, filling every intent after the batch
    that sent it (so agents keep trading), and return every intent and the counters."""
    params = {**KINDS[kind], "decide": decide}
    pop = make_population(
        kind,
        60,
        [0, 1],
        params,
        seed=3,
        backend=resolve(backend) if isinstance(backend, str) else backend,
    )
    sent = []
    for start in range(0, len(ticks), batch):
        out = pop.step(pop.prepare(ticks[start : start + batch]), 10**18)
        sent.append(out)
        reports = []
        for a, s, q, t in zip(out.agent, out.side, out.qty, out.order_type, strict=True):
            if t == 3:  # a cancel: done, nothing left
                reports.append(make_report(a, ReportKind.ACK, s, final=True))
            elif a % 3:  # fill two agents in three, leave the rest resting/pending
                reports.append(make_report(a, ReportKind.ACK, s, final=False))
                reports.append(make_report(a, ReportKind.FILL, s, q, final=True))
        if reports:
            pop.on_reports(np.concatenate(reports))
    return pop, sent


@pytest.mark.parametrize("decide", ["tick", "batch"])
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_matches_reference(kind, backend, decide, random_ticks):
    ref, ref_out = run(kind, "numpy", random_ticks, decide)
    pop, out = run(kind, backend, random_ticks, decide)
    assert ref.counters == pop.counters
    assert ref.counters["signals"] > ref.counters["intents"] > 0
    for a, b in zip(ref_out, out, strict=True):
        for field in ("agent", "symbol", "side", "qty", "order_type", "limit_price", "tick_ns"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
    for name in ref.state_names:
        assert np.array_equal(
            to_host(getattr(ref, name)), to_host(getattr(pop, name)), equal_nan=True
        ), name

    twin = make_population(
        kind, 60, [0, 1], {**KINDS[kind], "decide": decide}, seed=3, backend="numba"
    )
    twin.restore(ref.snapshot())  # a reference snapshot goes on in a compiled kernel
    more = random_ticks[:500]
    a, b = ref.step(ref.prepare(more), 10**18), twin.step(twin.prepare(more), 10**18)
    assert np.array_equal(a.agent, b.agent) and np.array_equal(a.limit_price, b.limit_price)


def test_per_tick_decides_more_than_batch(random_ticks):
    tick, _ = run("mean_reversion", "numba", random_ticks, "tick")
    batch, _ = run("mean_reversion", "numba", random_ticks, "batch")
    assert tick.counters["signals"] > 3 * batch.counters["signals"]

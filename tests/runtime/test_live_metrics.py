"""Live metrics in the execution process: published rows, checkpoints, catch-up."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from appliance.config import load_config
from appliance.model.records import METRIC, MetricGroup, Side
from appliance.runtime import live_metrics
from appliance.runtime.live_metrics import LiveMetrics, pack
from appliance.workers import compose
from tests.harness import write_config


@pytest.fixture
def cfg(tmp_path):
    path, _ = write_config(tmp_path)
    return load_config(path)


@pytest.fixture
def engine(cfg):
    e = compose.execution_engine(cfg)
    e.recover(epoch=1)
    yield e
    e.close()


@pytest.fixture
def trade(quotes, intents):
    """trade(engine, live, seq0, n, mid, t_ns, side=None): see _trade."""
    return lambda *a, **k: _trade(quotes, intents, *a, **k)


def _trade(quotes, intents, engine, live, seq0: int, n: int, mid: float, t_ns: int,
           side=None) -> None:  # fmt: skip
    """n agents of host 0 trade BTC (``side``, else alternately buy and sell: crossed
    internally); everything the execution worker would feed."""
    t = quotes([0, 1], [mid, 3400.0], [mid + 1, 3401.0], size=50.0)
    t["recv_ns"] = t_ns
    engine.on_ticks(t)
    live.ticks(t)
    batch = intents([
        {"seq": seq0 + i, "agent": i, "qty": 0.002,
         "side": side or (Side.BUY if (seq0 + i) % 2 else Side.SELL)} for i in range(n)
    ])  # fmt: skip
    reports = engine.process(batch)
    live.intents(batch)
    live.reports(reports)


def test_checkpoint_then_catch_up_from_the_journal(cfg, engine, trade, intents):
    live = LiveMetrics(cfg, 1, None)
    trade(engine, live, 0, 10, 65000.0, 10**18)
    old = os.umask(0o022)  # an operator's usual umask
    try:
        live.checkpoint()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(live.path).st_mode) == 0o640  # as private as the journal
    # Execution dies after more trading: its metrics never saw this.
    lost = LiveMetrics(cfg, 1, None)  # from the checkpoint; its own is never written
    trade(engine, lost, 10, 10, 65010.0, 10**18 + 10**9)
    engine.close()
    again = LiveMetrics(cfg, 1, None)
    assert again.caught_up == 10  # only the orders after the checkpoint were read
    got, want = again.metrics.figures("overall"), lost.metrics.figures("overall")
    for k in ("orders", "orders_filled", "rejects", "fees", "realized", "turnover"):
        assert got[k][0] == pytest.approx(want[k][0]), k
    # The same queue lifetime: re-delivered intents are not counted twice.
    again.intents(intents([{"seq": 15, "agent": 5}]))
    assert again.metrics.figures("overall")["orders"][0] == 20
    # A new lifetime (epoch): seqs start again and count.
    fresh = LiveMetrics(cfg, 2, None)
    fresh.intents(intents([{"seq": 0, "agent": 0}]))
    assert fresh.metrics.figures("overall")["orders"][0] == 21


def test_a_checkpoint_of_another_journal_is_not_used(cfg, engine, tmp_path, trade):
    live = LiveMetrics(cfg, 1, None)
    trade(engine, live, 0, 4, 65000.0, 10**18)
    live.checkpoint()
    engine.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"journal.sqlite{suffix}").unlink(missing_ok=True)
    engine = compose.execution_engine(cfg)
    engine.recover(epoch=1)  # a new, empty journal
    engine.close()
    assert LiveMetrics(cfg, 1, None).metrics.figures("overall")["orders"][0] == 0


def test_published_rows_name_groups_and_rank_agents(cfg, engine, trade):
    live = LiveMetrics(cfg, 1, None)
    trade(engine, live, 0, 6, 65000.0, 10**18, Side.BUY)  # at the venue: taker fees
    trade(engine, live, 6, 6, 65100.0, 10**18 + 2 * 10**9, Side.SELL)
    engine.close()
    rows = np.zeros(live_metrics.capacity(cfg), METRIC)
    pack(live.metrics, 2, rows)
    groups = [MetricGroup(g) for g in rows["group"]]
    assert groups[:3] == [MetricGroup.OVERALL, MetricGroup.POPULATION, MetricGroup.POPULATION]
    top = rows[rows["group"] == MetricGroup.TOP_AGENT]
    bottom = rows[rows["group"] == MetricGroup.BOTTOM_AGENT]
    assert len(top) == len(bottom) == 2
    assert top["net"][0] >= top["net"][1] >= bottom["net"][1] >= bottom["net"][0]
    overall = rows[0]
    assert overall["orders"] == 12
    assert overall["net"] == pytest.approx(overall["gross"] - overall["fees"])
    assert overall["fees"] > 0


def test_after_a_storage_halt_the_metrics_are_rebuilt_from_the_journal(cfg, engine, trade):
    live = LiveMetrics(cfg, 1, None)
    trade(engine, live, 0, 10, 65000.0, 10**18)
    live.checkpoint()
    saved = live.path.read_bytes()
    # The batch a halt cuts short is journaled, but its reports are never made: ``live``
    # does not see it (``seen`` stands for metrics that did).
    seen = LiveMetrics(cfg, 1, None)
    trade(engine, seen, 10, 10, 65010.0, 10**18 + 10**9)
    live.behind = True  # halted
    live.tick(force=True)
    assert live.path.read_bytes() == saved  # no checkpoint claims rows it lacks
    live.rebuild()  # the engine resumed
    got, want = live.metrics.figures("overall"), seen.metrics.figures("overall")
    for k in ("orders", "orders_filled", "fees", "realized", "turnover"):
        assert got[k][0] == pytest.approx(want[k][0]), k
    assert got["orders"][0] == 20
    live.tick(force=True)
    assert live.path.read_bytes() != saved  # checkpoints again


def test_a_rebuild_in_a_lifetime_without_a_checkpoint_counts_no_intent_twice(
    cfg, engine, trade, intents
):
    live = LiveMetrics(cfg, 1, None)  # no checkpoint of this lifetime yet
    trade(engine, live, 0, 10, 65000.0, 10**18)
    live.behind = True
    live.rebuild()
    assert live.metrics.figures("overall")["orders"][0] == 10
    # the queue delivers the batch the halt cut short again: journaled, so not new
    live.intents(intents([{"seq": 9, "agent": 9}]))
    assert live.metrics.figures("overall")["orders"][0] == 10
    live.intents(intents([{"seq": 10, "agent": 0}]))  # a new one counts
    assert live.metrics.figures("overall")["orders"][0] == 11

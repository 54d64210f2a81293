"""Live trading metrics: kept by the execution process, published through shared memory.

The execution worker feeds a ``TradingMetrics`` (docs/metrics.md) what it sees and
publishes a table of METRIC rows (overall, per population, per symbol, the top and bottom
agents by net PnL) in a seqlock snapshot the supervisor created; `dynamind status` and
`top` read it. The metrics are checkpointed next to the journal (``<journal>.metrics.npz``)
with the journal position they include, so a restarted execution process continues from
the checkpoint plus the journal rows written after it, never replaying all history. A
checkpoint of another journal is ignored (the metrics are then rebuilt from the journal
once). After a crash, what the checkpoint lacks comes from the journal (orders, outcomes
of those orders, fills); curve samples and signals of that interval are not recovered.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from appliance.config import Config
from appliance.model.records import METRIC, METRIC_COUNTS, METRIC_FIGURES, MetricGroup
from appliance.model.universe import AgentLayout
from appliance.shm import snapshot
from appliance.shm.header import Expected
from appliance.shm.segment import Segment, full_name
from appliance.shm.snapshot import SharedSnapshot
from appliance.storage.private import open_private
from appliance.trading.journal_read import JournalReader
from appliance.trading.metrics import TradingMetrics

log = logging.getLogger(__name__)

SEGMENT = "metrics"
PUBLISH_S = 0.5
METRICS_SUFFIX = ".metrics.npz"  # the checkpoint: <journal_path>.metrics.npz
TAG_PUBLISHED_NS = 0  # wall-clock time of the last publication


def capacity(cfg: Config) -> int:
    pops = sum(len(h.populations) for h in cfg.hosts)
    return 1 + pops + len(cfg.symbols) + 2 * cfg.metrics.top_agents


def footprint(cfg: Config) -> int:
    """Bytes the metrics snapshot takes in the shm filesystem."""
    return SharedSnapshot.footprint(METRIC, (capacity(cfg),))


def create(cfg: Config) -> SharedSnapshot:
    """The supervisor's: the operator group may read it, like every segment."""
    return SharedSnapshot.create(
        cfg.instance, SEGMENT, METRIC, (capacity(cfg),), cfg.operator_group
    )


def attach(cfg: Config) -> SharedSnapshot:
    """The execution process's (the writer)."""
    return SharedSnapshot.attach(cfg.instance, SEGMENT, METRIC, (capacity(cfg),))


def watch(instance: str) -> SharedSnapshot:
    """A reader's, read-only, without the config: the row count is in the header."""
    seg = Segment.attach(
        full_name(instance, SEGMENT), Expected(snapshot.KIND, METRIC), read_only=True
    )
    return SharedSnapshot(seg, METRIC, (int(seg.capacity),))


def pack(m: TradingMetrics, top: int, out: np.ndarray) -> None:
    """Fill ``out`` (METRIC rows) with the figures of ``m``; unused rows get NONE."""
    out[:] = np.zeros(1, METRIC)
    i = 0
    agents = m.figures("agent")
    traded = np.flatnonzero(agents["orders"] > 0)
    by_net = traded[np.argsort(-agents["net"][traded], kind="stable")]
    top = min(top, len(by_net))
    for group, figs, index in (
        (MetricGroup.OVERALL, m.figures("overall"), np.arange(1)),
        (MetricGroup.POPULATION, m.figures("population"), np.arange(len(m.agents.populations))),
        (MetricGroup.SYMBOL, m.figures("symbol"), np.arange(len(m.universe.symbols))),
        (MetricGroup.TOP_AGENT, agents, by_net[:top]),
        (MetricGroup.BOTTOM_AGENT, agents, by_net[::-1][:top]),
    ):
        rows = out[i : i + len(index)]
        rows["group"], rows["index"] = group, index
        for name in (*METRIC_FIGURES, *METRIC_COUNTS):
            rows[name] = figs[name][index]
        _who(m.agents, group, index, rows)
        i += len(index)


def _who(lay: AgentLayout, group: MetricGroup, index: np.ndarray, rows: np.ndarray) -> None:
    if group == MetricGroup.SYMBOL:
        rows["symbol"] = index
    elif group == MetricGroup.POPULATION:
        rows["host"] = [lay.populations[i].host for i in index.tolist()]
        rows["population"] = [lay.populations[i].population for i in index.tolist()]
    elif group in (MetricGroup.TOP_AGENT, MetricGroup.BOTTOM_AGENT):
        for row, i in zip(rows, index.tolist(), strict=True):
            pop, agent = lay.who(i)
            row["host"], row["population"], row["agent"] = pop.host, pop.population, agent


class LiveMetrics:
    """The execution process's metrics: fed, published, checkpointed (see the module)."""

    def __init__(self, cfg: Config, epoch: int, snapshot: SharedSnapshot | None) -> None:
        self.cfg = cfg
        self.epoch = epoch
        self.snapshot = snapshot
        self.metrics = TradingMetrics(cfg.universe(), cfg.metrics.sample_interval_s)
        self.path = Path(f"{cfg.journal_path}{METRICS_SUFFIX}")
        self._rows = np.zeros(capacity(cfg), METRIC)
        self._next_publish = 0.0
        self._next_checkpoint = time.monotonic() + cfg.metrics.checkpoint_s
        # Set while execution is halted by storage: the batch the halt cut short may have
        # journaled rows these metrics never saw, so no checkpoint may claim them until
        # ``rebuild``.
        self.behind = False
        self.caught_up = self._restore()

    # ---- feeding ----------------------------------------------------------------------

    def ticks(self, ticks: np.ndarray) -> None:
        self.metrics.on_ticks(ticks)

    def intents(self, intents: np.ndarray) -> None:
        self.metrics.on_intents(intents)

    def reports(self, reports: dict[int, np.ndarray]) -> None:
        self.metrics.on_reports(reports)

    def tick(self, force: bool = False) -> None:
        """Publish (every PUBLISH_S) and checkpoint (every metrics.checkpoint_s) when due."""
        now = time.monotonic()
        if self.snapshot is not None and (force or now >= self._next_publish):
            self._next_publish = now + PUBLISH_S
            pack(self.metrics, self.cfg.metrics.top_agents, self._rows)
            self.snapshot.write(self._rows, {TAG_PUBLISHED_NS: time.time_ns()})
        if (force or now >= self._next_checkpoint) and not self.behind:
            self._next_checkpoint = now + self.cfg.metrics.checkpoint_s
            try:
                self.checkpoint()
            except OSError as exc:
                # A full disk: the checkpoint only saves a rebuild from the journal.
                log.warning("metrics checkpoint %s not written: %s", self.path, exc)

    # ---- checkpoints ------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Save the state with the journal position it includes (written, then renamed)."""
        with JournalReader(self.cfg.journal_path) as j:
            orders, fills = j.marks()
            identity = j.identity()
        state = self.metrics.state()
        state["checkpoint"] = np.array([identity, orders, fills, self.epoch], np.int64)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        try:
            with open_private(tmp) as f:
                np.savez(f, **state)
            os.replace(tmp, self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # half a file on a full disk: give the space back
            raise

    def rebuild(self) -> None:
        """From the checkpoint and the journal, as a start does (after a storage halt)."""
        self.metrics = TradingMetrics(self.cfg.universe(), self.cfg.metrics.sample_interval_s)
        self.caught_up = self._restore()
        self.behind = False

    def _restore(self) -> int:
        """Load the checkpoint and the journal rows after it; the rows caught up."""
        with JournalReader(self.cfg.journal_path) as j:
            identity = j.identity()
            start = (0, 0)
            saved_epoch = None
            try:
                with np.load(self.path) as f:
                    state = {k: f[k] for k in f.files}
                ident, orders, fills, saved_epoch = state["checkpoint"].tolist()
                if ident != identity or (orders, fills) > j.marks():
                    raise ValueError("the checkpoint is of another journal")
                self.metrics.load(state)
                start = (orders, fills)
            except FileNotFoundError:
                pass
            except (OSError, KeyError, ValueError) as exc:
                log.warning("metrics checkpoint %s not used (%s): rebuilding", self.path, exc)
                self.metrics = TradingMetrics(
                    self.metrics.universe, self.metrics.sampler.interval_ns / 1e9
                )
            orders = list(j.orders(after=start[0]))
            self.metrics.replay_journal(orders, j.fills(after=start[1]))
            if saved_epoch != self.epoch:
                self.metrics.reset_queues()
                # what this queue lifetime journaled already (a restart or a rebuild within
                # it): a queue delivering those intents again is not delivering new ones
                self.metrics.seen(j.max_intent_seqs(str(self.epoch)))
        log.info("metrics: checkpoint at journal rows %s, %d orders caught up", start, len(orders))
        return len(orders)

    def close(self) -> None:
        self.tick(force=True)
        if self.snapshot is not None:
            self.snapshot.close()

"""Execution worker: the only process that talks to the venue.

Each loop it copies new ticks out of the ring (quotes for the paper venue and marks),
polls every host's intent queue, hands the intents to the ExecutionEngine (netting, risk,
journal, venue) and pushes the reports onto the hosts' report queues. Intents are
released from their queue only after the engine has journaled them, so a crash re-reads
them and the engine recognises what it already journaled: none lost, none twice.

Each host's positions are published in a snapshot tagged with the report-queue position
they include (see agent_host.py); a restart bumps the snapshot's epoch so hosts reload.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from appliance.config import Config
from appliance.model.enums import TradingState
from appliance.model.records import POSITION, TICK, ReportKind
from appliance.runtime import layout
from appliance.runtime.positions import TAG_EPOCH, TAG_INTENTS_TAIL, TAG_REPORTS_HEAD
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing
from appliance.trading.engine import ExecutionEngine
from appliance.trading.flatten import flatten_round
from appliance.workers import compose
from appliance.workers.segments import HostSegments

log = logging.getLogger(__name__)

TICK_BATCH = 8192
IDLE_WAIT_S = 0.002
REPORT_PUSH_WAIT_S = 0.05


class HostLink:
    """The queues and positions snapshot shared with one agent host."""

    def __init__(self, w: Worker, h: int, epoch_bump: bool) -> None:
        cfg = w.config
        self.host = h
        self.segments = HostSegments.attach(cfg, h)
        self.intents_q, self.reports_q = self.segments.intents_q, self.segments.reports_q
        self.snapshot = self.segments.snapshot
        self.consumer = self.intents_q.consumer(w.strategy)
        self.producer = self.reports_q.producer(w.strategy, seq_field="seq")
        self.offsets = np.cumsum([0] + [p.agents for p in cfg.hosts[h].populations])
        self.positions = np.zeros(self.snapshot.shape, dtype=POSITION)
        self.epoch = self.snapshot.tag(TAG_EPOCH) + (1 if epoch_bump else 0)
        self.dropped = 0

    def load_positions(self, positions: dict[tuple[int, int, int, int], float]) -> None:
        """Set from the engine's (host, population, agent, symbol) -> qty (not published)."""
        self.positions[...] = 0.0
        for (h, pop, agent, sym), qty in positions.items():
            if h == self.host:
                self.positions[self.offsets[pop] + agent, sym] = qty

    def tags(self) -> dict[int, int]:
        """The snapshot's tags (see publish); the cluster's uplink adds its own."""
        return {
            TAG_REPORTS_HEAD: self.producer.next_seq,
            TAG_EPOCH: self.epoch,
            TAG_INTENTS_TAIL: self.intents_q.tail,
        }

    def publish(self, rows: np.ndarray | None = None, values: bool = True) -> None:
        """Publish positions (all, ``rows`` only, or none) with the tags saying what they
        include: every report before the report-queue head, every intent before the
        intent-queue tail."""
        tags = self.tags()
        if not values:
            self.snapshot.write(None, tags)
        elif rows is None:
            self.snapshot.write(self.positions, tags)
        else:
            self.snapshot.write(self.positions[rows], tags, rows=rows)

    def send(self, reports: np.ndarray, apply: bool = True) -> None:
        """Push reports and publish the positions they move (``apply``: not yet counted)."""
        fills = reports[reports["kind"] == ReportKind.FILL]
        rows = None
        if apply and len(fills):
            rows = self.offsets[fills["population"]] + fills["agent"]
            np.add.at(
                self.positions,
                (rows, fills["symbol"]),
                fills["side"].astype(np.float64) * fills["fill_qty"],
            )
        pushed = self.producer.push_wait(reports, REPORT_PUSH_WAIT_S)
        if pushed < len(reports):
            # The host is not reading (dead or stuck). Never stall every other host for
            # it: drop the rest and bump the epoch, which makes the host reload its
            # positions from the snapshot instead of replaying reports.
            self.dropped += len(reports) - pushed
            self.epoch += 1
            log.warning(
                "report queue of host %d full: dropped %d reports, host will resync",
                self.host,
                len(reports) - pushed,
            )
            self.publish()
            return
        # Always publish the tags, fills or not: a host resyncing waits until the
        # snapshot covers every report it has already applied.
        self.publish(None if rows is None else np.unique(rows), values=rows is not None)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
        self.segments.close()


def main(w: Worker) -> None:
    cfg = w.config
    engine = compose.execution_engine(cfg)
    # The queues live as long as the supervisor's segments: their creation time names
    # that lifetime, so intents re-read after a crash of this process are recognised.
    summary = engine.recover(epoch=int(w.stats.segment.header["created_ns"]))
    log.info("recovered: %s", summary)
    ring = BroadcastRing.attach(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity)
    reader = ring.reader(w.strategy, start="latest", slot=layout.EXECUTION_READER)
    links = [HostLink(w, h, epoch_bump=True) for h in range(len(cfg.hosts))]
    positions = engine.positions()
    for link in links:
        # Positions from the journal already hold what recovery settled: its reports go
        # out unapplied, and the snapshot's tag (published last, with the new epoch)
        # tells the host to take the snapshot and skip them.
        link.load_positions(positions)
        if len(summary.reports.get(link.host, ())):
            link.send(summary.reports[link.host], apply=False)
        link.publish()
    batch = cfg.execution.batch
    next_status = 0.0
    configured = cfg.trading.state  # trading.state as the config file last said
    flattening = False
    w.event("ready")
    try:
        while True:
            if w.tick():
                for msg in w.take_messages():
                    if msg["kind"] == "reload":
                        configured = _reload(w, engine, links, msg["config"], configured)
                    elif msg["kind"] == "flatten":
                        flattening = _flatten(w, engine, links)
            if w.stopping and not w.draining:
                break
            busy = False
            view = reader.read(TICK_BATCH)
            if len(view):
                ticks = view.copy()  # the engine keeps state: never feed it a lapped view
                if reader.valid():
                    w.add("ticks_in", len(ticks))
                    _send(w, links, engine.on_ticks(ticks))
                else:
                    w.add("tick_gaps", len(ticks))
                busy = True
            runs = [link.consumer.peek(batch) for link in links]
            total = sum(len(r) for r in runs)
            if total:
                intents = np.concatenate(runs) if len(runs) > 1 else runs[0].copy()
                seen_before = engine.duplicates
                reports = engine.process(intents)  # journaled before it returns
                for link, run in zip(links, runs, strict=True):
                    link.consumer.advance(len(run))
                w.add("intents", total)
                _send(w, links, reports)
                resync = engine.duplicates > seen_before
                for link, run in zip(links, runs, strict=True):
                    if not len(run):
                        continue
                    if resync:
                        # Intents a crashed incarnation journaled came again: they make no
                        # reports, so their agents would wait for ever. Their fills are in
                        # our positions (loaded from the journal): have the host reload.
                        link.epoch += 1
                        link.publish()
                    elif not len(reports.get(link.host, ())):
                        link.publish(values=False)  # no reports, but the intents were taken
                busy = True
            elif w.draining:
                heads = {link.host: link.intents_q.head for link in links}
                engine.record_drained(heads)
                log.info("drained intent queues up to %s", heads)
                _final_check(w, engine, links)
                break
            now = time.monotonic()
            if now >= next_status:
                next_status = now + cfg.status_interval_s
                if flattening:  # what the last round could not close: try again
                    flattening = _flatten(w, engine, links)
                w.event("status", **engine.status())
            if not busy:
                reader.wait(IDLE_WAIT_S)
    finally:
        w.event("status", **engine.status())
        engine.close()
        for link in links:
            link.close()
        reader.close()
        ring.close()


def _reload(
    w: Worker, engine: ExecutionEngine, links: list[HostLink], config: dict, configured: str
) -> str:
    """Apply a reloaded config's risk limits and trading state; log only what changed.

    ``configured`` is trading.state as the file last said: the engine's state follows
    the file only when that key changes. Returns the file's new trading.state.
    """
    new = Config.model_validate(config)
    was = engine.status()["trading"]
    limits = compose.risk_limits(new)
    if limits != {s: engine.risk.limits(s) for s in limits}:
        engine.risk.set_limits(limits)
        log.info("risk limits reloaded")
    if new.trading.state != configured:
        engine.set_trading_state(TradingState(new.trading.state))
        log.info("trading state %s -> %s", was, new.trading.state)
    if new.trading.state == "halted" and was != "halted":
        # Halting stops new risk, resting orders included.
        _send(w, links, engine.cancel_all())
        log.warning("trading halted: resting orders cancelled")
    return new.trading.state


def _flatten(w: Worker, engine: ExecutionEngine, links: list[HostLink]) -> bool:
    """One round of `dynamind flatten` (see trading/flatten.py); True while still open."""
    done = flatten_round(engine)
    _send(w, links, done.cancel_reports)
    if done.closing:
        # The closing intents are the operator's: no agent waits for their reports. The
        # hosts reload their positions from the snapshot instead (a new epoch says so).
        positions = engine.positions()
        for link in links:
            link.load_positions(positions)
            link.epoch += 1
            link.publish()
        w.add("intents", done.closing)
    log.warning(
        "flattening: trading reduce_only, %d closing intents, %d positions still open",
        done.closing,
        done.open_after,
    )
    return done.open_after > 0


def _final_check(w: Worker, engine: ExecutionEngine, links: list[HostLink]) -> None:
    """At a clean stop: positions held, journaled and reported to hosts must agree."""
    held = engine.positions()
    journaled = engine.journal.positions_from_fills()
    told = {}
    for link in links:
        for p in range(len(link.offsets) - 1):
            rows = link.positions[link.offsets[p] : link.offsets[p + 1]]
            for agent, sym in zip(*np.nonzero(rows), strict=True):
                told[(link.host, p, int(agent), int(sym))] = float(rows[agent, sym])
    ok_journal = _same(held, journaled)
    ok_told = _same(held, told)
    if not (ok_journal and ok_told):
        log.error(
            "position mismatch at stop: journal %s, reported to hosts %s",
            "agrees" if ok_journal else "DIFFERS",
            "agrees" if ok_told else "DIFFERS",
        )
    w.event(
        "final",
        positions=[[*k, q] for k, q in sorted(held.items())],
        journal_matches=ok_journal,
        reported_matches=ok_told,
    )


def _same(a: dict, b: dict, tol: float = 1e-9) -> bool:
    keys = {k for k, v in a.items() if abs(v) > tol} | {k for k, v in b.items() if abs(v) > tol}
    return all(
        abs(a.get(k, 0.0) - b.get(k, 0.0)) <= tol * max(1.0, abs(a.get(k, 0.0))) for k in keys
    )


def _send(w: Worker, links: list[HostLink], reports: dict[int, np.ndarray]) -> None:
    for h, rep in reports.items():
        if len(rep) == 0:
            continue
        links[h].send(rep)
        w.add("reports", len(rep))
        w.add("fills", int((rep["kind"] == ReportKind.FILL).sum()))
        w.add("rejects", int((rep["kind"] == ReportKind.REJECT).sum()))

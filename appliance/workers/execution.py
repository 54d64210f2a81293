"""Execution worker: the only process that talks to the venue.

Each loop it copies new ticks out of the ring (quotes for the paper venue and marks),
polls every host's intent queue, hands the intents to the ExecutionEngine (netting, risk,
journal, venue) and pushes the reports onto the hosts' report queues. Intents are
released from their queue only after the engine has journaled them, so a crash re-reads
them and the engine recognises what it already journaled: none lost, none twice.

Each host's positions are published in a snapshot tagged with what they include
(runtime/positions.py); a restart bumps the snapshot's epoch so hosts reload.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.records import TICK, ReportKind
from appliance.runtime import layout, live_metrics
from appliance.runtime.desk import FLATTEN, Request, TradingDesk, desk_dir
from appliance.runtime.live_metrics import LiveMetrics
from appliance.runtime.messages import Final, Ready, Reload, Status
from appliance.runtime.positions import ExtraTags, PositionsPublisher
from appliance.runtime.worker import Worker
from appliance.shm import BroadcastRing, RingReader
from appliance.trading.control import RELOAD
from appliance.trading.engine import ExecutionEngine
from appliance.trading.flatten import flatten_round
from appliance.trading.recovery import RecoverySummary
from appliance.trading.storage_halt import StorageHalt
from appliance.workers import compose
from appliance.workers.segments import HostSegments

log = logging.getLogger(__name__)

TICK_BATCH = 8192
IDLE_WAIT_S = 0.002
REPORT_PUSH_WAIT_S = 0.05
DESK_POLL_S = 0.02  # how often operator requests (`dynamind trading`) are looked for


class HostLink:
    """The queues and positions snapshot shared with one agent host (``extra_tags``: see
    PositionsPublisher; the cluster's uplink plays this part with tags of its own)."""

    def __init__(self, w: Worker, h: int, extra_tags: ExtraTags | None = None) -> None:
        cfg = w.config
        self.host = h
        self.segments = HostSegments.attach(cfg, h)
        self.intents_q, self.reports_q = self.segments.intents_q, self.segments.reports_q
        self.snapshot = self.segments.snapshot
        self.consumer = self.intents_q.consumer(w.strategy)
        self.producer = self.reports_q.producer(w.strategy, seq_field="seq")
        self.positions = PositionsPublisher(
            self.snapshot,
            h,
            [p.agents for p in cfg.hosts[h].populations],
            self.reports_q,
            self.intents_q,
            extra_tags,
        )
        self.dropped = 0

    def send(self, reports: np.ndarray, apply: bool = True) -> None:
        """Push reports and publish the positions they move (``apply``: not yet counted)."""
        rows = self.positions.apply(reports) if apply else None
        pushed = self.producer.push_wait(reports, REPORT_PUSH_WAIT_S)
        if pushed < len(reports):
            # The host is not reading (dead or stuck). Never stall every other host for
            # it: drop the rest and have the host reload its positions from the snapshot
            # instead of replaying reports.
            self.dropped += len(reports) - pushed
            log.warning(
                "report queue of host %d full: dropped %d reports, host will resync",
                self.host,
                len(reports) - pushed,
            )
            self.positions.resync()
            return
        self.positions.reported(rows)

    def close(self) -> None:
        self.consumer.close()
        self.producer.close()
        self.segments.close()


class Outbox:
    """Where every report of the engine goes: the owning host's queue, the stats counters
    and the live metrics."""

    def __init__(self, w: Worker, links: list[HostLink], live: LiveMetrics) -> None:
        self.w = w
        self.links = links
        self.live = live

    def send(self, reports: dict[int, np.ndarray]) -> None:
        self.count(reports)
        for h, rep in reports.items():
            if len(rep):
                self.links[h].send(rep)
                self.w.add("reports", len(rep))

    def count(self, reports: dict[int, np.ndarray]) -> None:
        """Into the metrics and the fill and reject counters; alone for reports no host
        waits for (a flatten's)."""
        self.live.reports(reports)
        for rep in reports.values():
            self.w.add("fills", int((rep["kind"] == ReportKind.FILL).sum()))
            self.w.add("rejects", int((rep["kind"] == ReportKind.REJECT).sum()))


def main(w: Worker) -> None:
    cfg = w.config
    # The queues live as long as the supervisor's segments: their creation time names
    # that lifetime, so intents re-read after a crash of this process are recognised.
    epoch = int(w.stats.segment.header["created_ns"])
    # A full or failing disk halts trading instead of ending the process (storage_halt.py).
    guard = StorageHalt(
        lambda: compose.execution_engine(w.config), epoch, compose.execution_files(cfg)
    )
    summary = guard.start()
    live = LiveMetrics(cfg, epoch, live_metrics.attach(cfg))  # continues from the journal
    ring = BroadcastRing.attach(cfg.instance, layout.TICKS, TICK, cfg.ring_capacity)
    reader = ring.reader(w.strategy, start="latest", slot=layout.EXECUTION_READER)
    links = [HostLink(w, h) for h in range(len(cfg.hosts))]
    out = Outbox(w, links, live)
    if summary is not None:
        _recovered(guard.call(ExecutionEngine.positions) or {}, summary, links, resumed=False)
    batch = cfg.execution.batch
    configured = cfg.trading.state  # trading.state as the config file last said
    desk = TradingDesk(desk_dir(cfg.journal_path), cfg.operator_group)
    chores = Chores(w, guard, out, desk)
    last_ticks = np.zeros(0, TICK)  # the newest quotes, for an engine that resumes
    w.subscribe(Reload)
    w.send(Ready())
    try:
        while True:
            if w.tick():
                for msg in w.take_messages():
                    match msg:
                        case Reload():
                            configured = _reload_state(w, guard, out, configured)
            if w.stopping and not w.draining:
                break
            ticks = _feed_ticks(reader, guard, out)
            busy = ticks is not None
            if ticks is not None and len(ticks):
                last_ticks = ticks
            if w.stopping and not w.draining:  # again: a stop that came in meanwhile (a
                break  # signal) leaves the intents queued for the next start, untaken
            if guard.call(_take_intents, out, batch):
                busy = True
            elif guard.engine is None:  # a drain waits for the disk too, within its timeout
                live.behind = True
                if _resume(guard, out, last_ticks):  # a reload while halted applies now
                    configured = _reload_state(w, guard, out, configured)
            elif w.draining:
                guard.call(_drain, w, links)
                break
            live.tick()
            chores.run(time.monotonic())
            if not busy:
                reader.wait(IDLE_WAIT_S)
    finally:
        desk.close()
        w.send(Status(guard.status()))
        live.behind = live.behind or guard.engine is None  # a halt the loop had not seen
        guard.close()
        live.close()
        for link in links:
            link.close()
        reader.close()
        ring.close()


def _feed_ticks(reader: RingReader, guard: StorageHalt, out: Outbox) -> np.ndarray | None:
    """The ring's new ticks into the engine and the metrics: the ticks (empty when the
    writer lapped what was read: counted as a gap), None when there were none."""
    view = reader.read(TICK_BATCH)
    if not len(view):
        return None
    ticks = view.copy()  # the engine keeps state: never feed it a lapped view
    if not reader.valid():
        out.w.add("tick_gaps", len(ticks))
        return ticks[:0]
    out.w.add("ticks_in", len(ticks))
    out.live.ticks(ticks)
    out.send(guard.call(ExecutionEngine.on_ticks, ticks) or {})
    return ticks


class Chores:
    """What execution does on a clock between batches: operator requests, status lines
    (at once when a storage halt begins or ends), the next round of a flatten."""

    def __init__(self, w: Worker, guard: StorageHalt, out: Outbox, desk: TradingDesk) -> None:
        self.w, self.guard, self.out, self.desk = w, guard, out, desk
        self.next_status = self.next_desk = 0.0
        self.halted = guard.engine is None  # as the last status said
        self.flatten_by = ""  # the operator of a flatten still closing positions

    def run(self, now: float) -> None:
        guard = self.guard
        if now >= self.next_desk:
            self.next_desk = now + DESK_POLL_S
            self.flatten_by = _serve_desk(self.desk, guard, self.w, self.out) or self.flatten_by
            # A flatten ends when trading leaves reduce-only (a resume, a halt).
            self.flatten_by = self.flatten_by if _reduce_only_or_down(guard) else ""
        if now >= self.next_status or self.halted != (guard.engine is None):
            self.next_status = now + self.w.config.status_interval_s
            self.halted = guard.engine is None
            if self.flatten_by and guard.call(_flatten, self.w, self.out, self.flatten_by) is False:
                self.flatten_by = ""  # flat: no round left to try again
            self.w.send(Status(guard.status()))


def _recovered(
    positions: dict, summary: RecoverySummary, links: list[HostLink], resumed: bool
) -> None:
    """Give each host the positions a recovery settled and its reports. Positions from the
    journal already hold what recovery settled: its reports go out unapplied, and the
    snapshot's tag (published last, with a new epoch) tells the host to take the snapshot
    and skip them."""
    log.info("recovered: %s", summary)
    for link in links:
        link.positions.load(positions)
        if len(summary.reports.get(link.host, ())):
            link.send(summary.reports[link.host], apply=False)
        if resumed:
            link.positions.resync()  # a new epoch: the publisher's was this process's
        else:
            link.positions.publish()


def _resume(guard: StorageHalt, out: Outbox, last_ticks: np.ndarray) -> bool:
    """While halted by storage: a new engine when a retry is due and the disk takes it.
    True when it resumed."""
    summary = guard.retry()
    if summary is None:
        return False
    out.live.rebuild()  # what the cut-short batch and the recovery journaled included
    positions = guard.call(ExecutionEngine.positions) or {}
    _recovered(positions, summary, out.links, resumed=True)
    if len(last_ticks):
        out.send(guard.call(ExecutionEngine.on_ticks, last_ticks) or {})
    return True


def _drain(engine: ExecutionEngine, w: Worker, links: list[HostLink]) -> None:
    heads = {link.host: link.intents_q.head for link in links}
    engine.record_drained(heads)
    log.info("drained intent queues up to %s", heads)
    _final_check(w, engine, links)


def _serve_desk(desk: TradingDesk, guard: StorageHalt, w: Worker, out: Outbox) -> str:
    """Answer operator requests (`dynamind trading`, `dynamind flatten`); while halted by
    storage, with why. Returns who asked for a flatten that still has positions to close."""
    flatten_by = ""
    for req in desk.requests():
        flatten_by = guard.call(_operator, w, out, req) or flatten_by
        if guard.engine is None:  # halted before, or by this request's own write
            req.answer({"ok": False, "error": f"trading halted, {guard.reason}"})
    return flatten_by


def _reduce_only_or_down(guard: StorageHalt) -> bool:
    return guard.engine is None or guard.engine.control.state is TradingState.REDUCE_ONLY


def _take_intents(engine: ExecutionEngine, out: Outbox, batch: int) -> bool:
    """Take up to ``batch`` intents from each host's queue, journal and answer them, and
    publish what each host's snapshot now includes. False when every queue was empty."""
    links = out.links
    runs = [link.consumer.peek(batch) for link in links]
    total = sum(len(r) for r in runs)
    if not total:
        return False
    intents = np.concatenate(runs) if len(runs) > 1 else runs[0].copy()
    seen_before = engine.duplicates
    reports = engine.process(intents)  # journaled before it returns
    for link, run in zip(links, runs, strict=True):
        link.consumer.advance(len(run))
    out.w.add("intents", total)
    out.live.intents(intents)
    out.send(reports)
    resync = engine.duplicates > seen_before
    for link, run in zip(links, runs, strict=True):
        if not len(run):
            continue
        if resync:
            # Intents a crashed incarnation journaled came again: they make no reports,
            # so their agents would wait for ever. Their fills are in our positions
            # (loaded from the journal): have the host reload.
            link.positions.resync()
        elif not len(reports.get(link.host, ())):
            link.positions.publish(values=False)  # no reports, but the intents were taken
    return True


def _reload_state(w: Worker, guard: StorageHalt, out: Outbox, configured: str) -> str:
    """``_reload`` on the engine. While halted by storage nothing can be journaled: the
    file's state stays due (``configured`` unchanged) for the engine that resumes (built
    from the reloaded config, it has its rules already)."""
    done = guard.call(_reload, w, out, configured)
    return configured if done is None else done


def _reload(engine: ExecutionEngine, w: Worker, out: Outbox, configured: str) -> str:
    """Apply a reloaded config's pre-trade rules and trading state; log only what changed.

    ``configured`` is trading.state as the file last said: the engine's state follows
    the file only when that key changes. Returns the file's new trading.state.
    """
    new = w.config  # the worker context took the reloaded config
    rules = compose.rules(new)
    if rules != engine.rules:
        engine.set_rules(rules)
        log.info("pre-trade rules reloaded")
    if new.trading.state != configured:
        why = f"reload: trading.state {configured} -> {new.trading.state}"
        out.send(engine.set_trading_state(new.trading.state, RELOAD, why))
    return new.trading.state


def _operator(engine: ExecutionEngine, w: Worker, out: Outbox, req: Request) -> str:
    """`dynamind trading`: change the state as asked, journaled with who and why;
    `dynamind flatten` (state FLATTEN): its first round. Returns the flatten's operator
    while positions are left to close."""
    who = f"operator {req.user} (uid {req.uid}, pid {req.pid})"
    was = engine.control.state
    if req.state == FLATTEN:
        still_open = _flatten(engine, w, out, who)
        w.send(Status(engine.status()))  # the board shows it without waiting
        req.answer({"ok": True, "state": engine.control.state.value, "was": was.value,
                    "why": engine.control.describe()})  # fmt: skip
        return who if still_open else ""
    try:
        state = TradingState(req.state)
    except ValueError:
        req.answer({"ok": False, "error": f"unknown trading state {req.state!r}"})
        return ""
    why = f"dynamind trading by {req.user} at {time.strftime('%H:%M:%S')}"
    if req.reason:
        why += f": {req.reason}"
    out.send(engine.set_trading_state(state, who, why))
    w.send(Status(engine.status()))  # the board shows it without waiting
    reply = {"ok": True, "state": state.value, "was": was.value, "why": engine.control.describe()}
    req.answer(reply)
    return ""


def _flatten(engine: ExecutionEngine, w: Worker, out: Outbox, who: str) -> bool:
    """One round of `dynamind flatten` (see trading/flatten.py); True while still open."""
    done = flatten_round(engine, who)
    out.send(done.cancel_reports)
    out.count(done.closing_reports)
    if done.closing:
        # The closing intents are the operator's: no agent waits for their reports. The
        # hosts reload their positions from the snapshot instead (a new epoch says so).
        positions = engine.positions()
        for link in out.links:
            link.positions.load(positions)
            link.positions.resync()
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
    journaled = engine.journal.reads.positions_from_fills()
    told = {k: q for link in links for k, q in link.positions.told().items()}
    ok_journal = _same(held, journaled)
    ok_told = _same(held, told)
    if not (ok_journal and ok_told):
        log.error(
            "position mismatch at stop: journal %s, reported to hosts %s",
            "agrees" if ok_journal else "DIFFERS",
            "agrees" if ok_told else "DIFFERS",
        )
    w.send(
        Final(
            positions=[(*k, q) for k, q in sorted(held.items())],
            journal_matches=ok_journal,
            reported_matches=ok_told,
        )
    )


def _same(a: dict, b: dict, tol: float = 1e-9) -> bool:
    keys = {k for k, v in a.items() if abs(v) > tol} | {k for k, v in b.items() if abs(v) > tol}
    return all(
        abs(a.get(k, 0.0) - b.get(k, 0.0)) <= tol * max(1.0, abs(a.get(k, 0.0))) for k in keys
    )

"""Reading a running appliance from outside: processes, ring readers, queue depths, rates.

Everything here is read from shared memory without locks (the stats slots, the board, the
ring's reader slots, the queues' cursors), so watching never slows the appliance down.
Used by `dynamind status` and `dynamind top`, which share the wording defined here.

A Monitor outlives the appliance it watches: when the supervisor goes away (its owner
lock on the stats segment is released) the Monitor lets go of every segment and says so;
each later sample tries to attach again, so `top` picks up the next start by itself.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import posix_ipc

from appliance.model.enums import Role
from appliance.model.records import INTENT, REPORT, TICK
from appliance.ops.trading_view import TradingView
from appliance.ops.trading_view import format_text as metrics_text
from appliance.runtime import layout
from appliance.runtime.board import Board
from appliance.runtime.service import pnl_net
from appliance.shm import BroadcastRing, RecordQueue, SegmentError, Stats
from appliance.shm.segment import OWNER_LOCK_BYTE, is_locked
from appliance.shm.stats import percentile

# The segments are the service user's (mode 0600): other users see nothing.
NO_PERMISSION = "permission denied on its shared memory: run this as the service's user (or root)"


@dataclass
class ProcessRow:
    name: str
    role: str
    pid: int
    alive: bool
    state: str
    core: int
    restarts: int  # incarnation - 1: the same figure in `status`, `top` and the log
    heartbeat_age_s: float
    counters: dict[str, int]
    rates: dict[str, float]  # per second since the previous sample
    p50_us: float  # log2-bucket upper bounds of the latency histogram
    p99_us: float


@dataclass
class ReaderRow:
    name: str
    lag: int  # records published but not yet read; never negative
    lost: int  # records the reader was lapped out of
    gaps: int  # batches discarded because the writer overwrote them while in use
    alive: bool


@dataclass
class QueueRow:
    name: str
    head: int
    tail: int
    capacity: int

    @property
    def depth(self) -> int:
        return self.head - self.tail


@dataclass
class Sample:
    taken: float
    running: bool
    processes: list[ProcessRow] = field(default_factory=list)
    readers: list[ReaderRow] = field(default_factory=list)
    queues: list[QueueRow] = field(default_factory=list)
    ticks_published: int = 0
    ticks_per_s: float | None = None  # None: one sample, no rate yet
    board: dict[str, Any] = field(default_factory=dict)
    banner: str = ""  # why there is nothing to show (not running, stopping, ...)
    metrics: dict[str, Any] | None = None  # live trading metrics, see trading_view.py


class _Attached:
    """The segments of one running instance. Agent hosts are found in the stats segment
    (a slot per process, named by the config), so no config file is needed: `status` works
    while the file on disk is being edited, or is invalid."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.parts: list[Any] = []
        self.hosts: list[str] = []
        self.host_index: dict[int, str] = {}  # host index in the config -> name
        self.queues: list[tuple[str, RecordQueue]] = []
        try:
            self.stats = self._keep(Stats.attach(instance, layout.STATS, read_only=True))
            self.board = self._keep(Board.attach(instance))
            self.ring = self._keep(
                BroadcastRing.attach(instance, layout.TICKS, TICK, read_only=True)
            )
            self.metrics = self._keep(TradingView(instance))
        except BaseException:
            self.close()
            raise

    def _keep(self, part: Any) -> Any:
        self.parts.append(part)
        return part

    def find_hosts(self, slots: list[dict[str, Any]]) -> None:
        """Attach the queues of agent hosts that appeared since the last look."""
        # (host index, name): a cluster instance runs only some of its config's hosts
        hosts = [(layout.host_of_slot(s["slot"]), s["name"])
                 for s in sorted(slots, key=lambda s: s["slot"])
                 if s["role"] == Role.AGENT_HOST]  # fmt: skip
        for h, name in hosts[len(self.hosts) :]:
            try:
                iq = RecordQueue.attach(
                    self.instance, layout.intents_queue(h), INTENT, read_only=True
                )
                rq = RecordQueue.attach(
                    self.instance, layout.reports_queue(h), REPORT, read_only=True
                )
            except SegmentError:
                return  # not there yet: next time
            self.parts += [iq, rq]
            self.queues += [(f"intents {name}", iq), (f"reports {name}", rq)]
            self.hosts.append(name)
            self.host_index[h] = name

    def reader_name(self, slot: int, pid: int, names: dict[int, str]) -> str:
        """Who a ring reader slot belongs to (slots are fixed per role, see layout.py; a
        cluster's bridge reads from the first slot after the hosts', found by its pid)."""
        if slot == layout.EXECUTION_READER:
            return Role.EXECUTION
        if slot == layout.RECORDER_READER:
            return Role.RECORDER
        host = self.host_index.get(slot - layout.FIRST_HOST_READER)
        return host or names.get(pid) or f"slot {slot}"

    def truncated(self) -> str | None:
        """A segment of ours whose file someone shortened (see Segment.truncated)."""
        segments = [self.stats.segment, self.board.segment, self.ring.segment]
        segments += [q.segment for _, q in self.queues]
        if self.metrics.snapshot is not None:
            segments.append(self.metrics.snapshot.segment)
        return next((why for s in segments if (why := s.truncated())), None)

    @property
    def owner_alive(self) -> bool:
        # The supervisor holds an owner lock on the stats segment for its whole life: our
        # descriptor refers to the same file, so this says whether *that* run still lives
        # (a new run has a new file, which a re-attach finds).
        return is_locked(self.stats.segment.fd, OWNER_LOCK_BYTE)

    def close(self) -> None:
        for part in reversed(self.parts):
            with contextlib.suppress(Exception):
                part.close()
        self.parts.clear()


class Monitor:
    """Samples an instance's segments on demand; survives the instance stopping."""

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._seg: _Attached | None = None
        self._last: tuple[float, int, dict[str, dict[str, int]]] | None = None
        self._last_board: dict[str, Any] = {}
        self._gone_at: float | None = None  # wall clock when we saw it go
        self._died = 0  # the supervisor's pid, when it went without stopping (killed)
        self.attach_error = ""

    @classmethod
    def open(cls, instance: str) -> Monitor:
        """A monitor already attached; SegmentError if the instance is not running."""
        m = cls(instance)
        m._seg = _Attached(instance)
        return m

    @property
    def attached(self) -> bool:
        return self._seg is not None

    @property
    def supervisor_pid(self) -> int:
        """The pid of the supervisor that created the attached segments (0: none)."""
        return self._seg.board.owner_pid if self._seg is not None else 0

    @property
    def hosts(self) -> list[str]:
        return list(self._seg.hosts) if self._seg is not None else []

    def _try_attach(self) -> bool:
        try:
            self._seg = _Attached(self.instance)
        except SegmentError as exc:  # not running, or still creating its segments
            self.attach_error = str(exc)
            return False
        except posix_ipc.PermissionsError:
            self.attach_error = NO_PERMISSION
            return False
        self.attach_error = ""
        self._last = None  # rates restart from the new run's counters
        self._gone_at = None
        self._died = 0
        return True

    def _detach(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None
        self._last = None
        if self._gone_at is None:
            self._gone_at = time.time()

    def sample(self) -> Sample:
        now = time.monotonic()
        if self._seg is None and not self._try_attach():
            return Sample(now, False, board=self._last_board, banner=self._banner())
        seg = self._seg
        if why := seg.truncated():  # reading on would die of SIGBUS: let go, attach anew
            self._detach()
            banner = f"{self.instance}: {why}: not read (it would crash this reader)"
            return Sample(now, False, board=self._last_board, banner=banner)
        if not seg.owner_alive:
            if self._gone_at is None and seg.board.read()["phase"] not in ("stopping", "halting"):
                self._died = seg.board.owner_pid  # no stop began: it was killed
            self._detach()
            return Sample(now, False, board=self._last_board, banner=self._banner())
        board = seg.board.read()
        self._last_board = board
        slots = seg.stats.snapshot()
        if board["phase"] != "starting":  # by then every host holds its stats slot
            seg.find_hosts(slots)
        # Reader cursors first, then the publish cursor: a cursor never passes the publish
        # cursor it was read before, so lag (publish - cursor) cannot come out negative.
        readers = seg.ring.readers()
        published = seg.ring.publish_cursor
        prev = self._last
        dt = (now - prev[0]) if prev else 0.0
        rows = [self._row(s, prev[2] if prev else {}, dt) for s in slots]
        ticks_per_s = (published - prev[1]) / dt if prev and dt > 0 else None
        self._last = (now, published, {s["name"]: s["counters"] for s in slots})
        return Sample(
            taken=now,
            running=True,
            processes=rows,
            readers=[
                ReaderRow(
                    seg.reader_name(r["slot"], r["pid"], {s["pid"]: s["name"] for s in slots}),
                    max(0, published - r["cursor"]),
                    r["lost"],
                    r["gaps"],
                    r["alive"],
                )
                for r in readers
            ],
            queues=[QueueRow(n, q.head, q.tail, q.capacity) for n, q in seg.queues],
            ticks_published=published,
            ticks_per_s=ticks_per_s,
            board=board,
            banner=_phase_banner(board.get("phase", "")),
            metrics=seg.metrics.read(seg.hosts),
        )

    @staticmethod
    def _row(s: dict[str, Any], before_all: dict[str, dict[str, int]], dt: float) -> ProcessRow:
        before = before_all.get(s["name"], {})
        counters = s["counters"]
        rates = {k: (v - before.get(k, v)) / dt if dt > 0 else 0.0 for k, v in counters.items()}
        return ProcessRow(
            name=s["name"],
            role=s["role"],
            pid=s["pid"],
            alive=s["alive"],
            state=s["state"] if s["alive"] else "dead",
            core=s["core"],
            restarts=max(0, s["incarnation"] - 1),
            heartbeat_age_s=max(0.0, (time.monotonic_ns() - s["heartbeat_ns"]) / 1e9),
            counters=s["counters"],
            rates=rates,
            p50_us=percentile(s["histogram"], 50) / 1000,
            p99_us=percentile(s["histogram"], 99) / 1000,
        )

    def _banner(self) -> str:
        inst = self.instance
        if self.attach_error == NO_PERMISSION:
            return f"{inst}: {NO_PERMISSION}"
        if self._gone_at is None:
            return f"{inst} is not running"
        last = trading_text(self._last_board) if self._last_board else ""
        seen = f", trading was {last}" if last else ""
        if self._died:
            return (
                f"{inst} is down: its supervisor (pid {self._died}) ended without a stop"
                f"{seen}; the next start reclaims what it left"
            )
        when = time.strftime("%H:%M:%S", time.localtime(self._gone_at))
        return f"{inst} stopped at {when}{seen}"

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None


def _phase_banner(phase: str) -> str:
    if phase in ("starting", "stopping", "halting", "reloading"):
        return f"appliance is {phase}"
    return ""


# ---- the shared wording ---------------------------------------------------------------


def trading_text(board: dict[str, Any]) -> str:
    """``active``, ``reduce_only (why)``, ``halted (why)``: one wording everywhere."""
    state = board.get("trading") or "unknown"
    why = board.get("trading_why", "")
    return f"{state} ({why})" if why and state != "active" else state


def pnl_text(board: dict[str, Any]) -> str:
    net = pnl_net(board.get("realized", 0.0), board.get("unrealized", 0.0), board.get("fees", 0.0))
    return f"pnl net {net:,.2f} (fees {board.get('fees', 0.0):,.2f})"


def journal_text(sample: Sample) -> str:
    """The whole journal's figures: the overall row of the metrics table on the same
    screen when execution publishes it, else the PnL on the board."""
    overall = (sample.metrics or {}).get("overall")
    if not overall:
        return f"journal: {pnl_text(sample.board)}"
    o = overall[0]
    return (
        f"journal: pnl net {o['net']:,.2f} (fees {o['fees']:,.2f}), orders {o['orders']:,}, "
        f"rejects {o['rejects']:,}"
    )


def this_start_text(sample: Sample) -> str:
    """Counts since this start: execution's counters, as in the process table."""
    b = sample.board
    counted = next((p.counters for p in sample.processes if p.name == Role.EXECUTION), b)
    return (
        f"since this start: fills {counted.get('fills', 0):,}, "
        f"rejects {counted.get('rejects', 0):,}, open orders {b.get('open_orders', 0):,}"
    )


def rate_text(sample: Sample) -> str:
    """Ticks per second; "-" until two samples make a rate."""
    return "-" if sample.ticks_per_s is None else f"{sample.ticks_per_s:,.0f}"


def reload_text(board: dict[str, Any]) -> str:
    if not board.get("reload_count"):
        return "no reload yet"
    when = time.strftime("%H:%M:%S", time.localtime(board["reload_ns"] / 1e9))
    return f"last reload {when}: {board['reload_note']}"


def summary_lines(sample: Sample) -> list[str]:
    """The appliance as a whole, for the top of `status` and `top`."""
    if not sample.running:
        return [sample.banner]
    b = sample.board
    lines = [
        f"trading: {trading_text(b)}",
        journal_text(sample),
        this_start_text(sample),
        f"ring: {sample.ticks_published:,} ticks published, {rate_text(sample)}/s",
        reload_text(b),
    ]
    if sample.banner:
        lines.insert(0, sample.banner)
    return lines


def state_text(p: ProcessRow, stale_after_s: float = 2.0) -> str:
    """A process's state; a live one whose heartbeat is late is ``stale``."""
    if p.alive and p.state == "running" and p.heartbeat_age_s > stale_after_s:
        return "stale"
    return p.state


def core_text(core: int) -> str:
    return str(core) if core >= 0 else "-"


def p99_text(p: ProcessRow) -> str:
    """The p99 as what the histogram knows: a bound (``<=1.07s``), never an exact number."""
    return bound_text(p.p99_us)


def bound_text(us: float) -> str:
    """A latency histogram's log2-bucket ceiling, in microseconds, as an upper bound with
    its unit (rounded up): ``<=66us``, ``<=2.1ms``, ``<=1.08s``; ``-`` for none."""
    if us != us:
        return "-"
    if us < 1000:
        return f"<={math.ceil(us)}us"
    if us < 1e6:
        return f"<={math.ceil(us / 100) / 10:g}ms"
    return f"<={math.ceil(us / 1e4) / 100:g}s"


def format_text(sample: Sample) -> str:
    """The plain-text status (what `dynamind status` prints)."""
    lines = summary_lines(sample)
    if not sample.running:
        return "\n".join(lines)
    lines += [
        "",
        f"{'name':<12} {'role':<11} {'pid':>7} {'state':<9} {'core':>4} {'beat':>6} "
        f"{'restarts':>8} {'p99':>8}  counters",
    ]
    for p in sample.processes:
        nonzero = " ".join(f"{k}={v:,}" for k, v in p.counters.items() if v)
        lines.append(
            f"{p.name:<12} {p.role:<11} {p.pid:>7} {state_text(p):<9} {core_text(p.core):>4} "
            f"{p.heartbeat_age_s:>5.1f}s {p.restarts:>8} {p99_text(p):>8}  {nonzero}"
        )
    lines.append("")
    for r in sample.readers:
        lines.append(
            f"ring reader {r.name:<12} lag {r.lag:>9,} lost {r.lost:>9,} gaps {r.gaps:>7,} "
            f"{'alive' if r.alive else 'gone'}"
        )
    for q in sample.queues:
        lines.append(f"queue {q.name:<20} depth {q.depth:>7,} / {q.capacity:,}")
    lines += ["", metrics_text(sample.metrics)]
    return "\n".join(lines)

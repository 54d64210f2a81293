"""Orders over NATS: intents to the one execution, reports and positions back.

Intents. An agents instance publishes each agent host's intents to
``<prefix>.intents.<host>``, one message per run of consecutive queue records (at most
MAX_INTENTS). An intent's identity is (instance, host, epoch, seq): its instance, its host,
the lifetime of that instance's queues and its position in its host's queue. A run's msg
id names it by the identity of its first intent and its length, and runs are appended as
a chain (see client.SubjectChain), so the stream holds each intent exactly once.

On the execution side an intent is known by its place in that stream: ``exec_id`` =
stream sequence of its run << RUN_BITS | index in the run. It replaces the queue position
in the ``seq`` field when the gateway hands the run to execution's queue, so the journal's
(host, intent_seq) is unique across every run and restart of either instance, and the
highest one journaled says exactly where the gateway resumes the stream.

Reports. The gateway forwards, per remote host, what that host would see if it sat next to
execution: on ``<prefix>.reports.<host>.events`` the REPORT records of its report queue (with
their queue positions in ``seq``), and on ``<prefix>.reports.<host>.reset`` the host's
positions in full ("a reset": every report before ``Dm-Head`` is in them), sent when the
gateway starts, when execution tells hosts to reload (a new snapshot epoch) and every
``reset_interval_s``. Both carry ``Dm-Taken``: the highest exec id execution has taken
with every report of it before this message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.cluster.wire import (
    COUNT,
    EPOCH,
    KIND,
    MSG_ID,
    Run,
    WireError,
    decode_run,
    fingerprint,
    header_int,
    run_headers,
)
from appliance.model.records import INTENT, REPORT

RUN_BITS = 12
MAX_INTENTS = 1 << RUN_BITS  # 256 KiB of payload
RESET, EVENTS = "reset", "events"
TAKEN = "Dm-Taken"  # exec id watermark, -1: none yet
HEAD = "Dm-Head"  # reset: report-queue position its positions include everything before
PART = "Dm-Part"  # reset: part index, parts in all, stream seq of part 0 (-1 on part 0)
PARTS = "Dm-Parts"
FIRST_PART = "Dm-First-Part"
SHAPE = "Dm-Shape"  # reset: "agents,symbols" of the positions table
CHECKPOINT = "Dm-Checkpoint"  # reset: "1" when every report it includes was sent before it
# A reset lists the non-zero positions: (row, column, quantity) cells.
CELL = np.dtype([("row", "<u4"), ("col", "<u4"), ("qty", "<f8")])
MAX_CELLS = (512 * 1024) // CELL.itemsize


def exec_ids(stream_seq: int, n: int) -> np.ndarray:
    """Execution-side identities of the ``n`` intents of the run stored at ``stream_seq``."""
    if n > MAX_INTENTS:
        raise WireError(f"a run of {n} intents is longer than {MAX_INTENTS}")
    return (np.uint64(stream_seq) << np.uint64(RUN_BITS)) + np.arange(n, dtype=np.uint64)


def run_of(exec_id: int) -> int:
    """Stream sequence of the run an exec id belongs to."""
    return exec_id >> RUN_BITS


def host_layout(host: str, populations: Sequence[tuple[str, int]], symbols: Sequence[str]) -> str:
    """Fingerprint of what a host's intents mean: its name, populations and symbol table."""
    return fingerprint(["intents", host, *populations, *symbols])


def intent_headers(
    instance: str, host: str, epoch: int, rows: np.ndarray, layout: str
) -> dict[str, str]:
    first, n = int(rows["seq"][0]), len(rows)
    return run_headers(instance, epoch, first, n, layout, f"{instance}.{host}.{epoch}.{first}+{n}")


def decode_intents(
    data: bytes, headers: Mapping[str, str] | None, layout: str, host: int, name: str
) -> Run:
    """An intent run of host ``host`` (index; ``name``), checked against its layout."""
    run = decode_run(data, headers, INTENT, f"intents of {name}", "seq")
    if run.layout != layout:
        raise WireError(
            f"intents of {name} from {run.source!r} were made for another layout (layout "
            f"{run.layout}, ours {layout}): every instance needs the same [[hosts]] and "
            "[[symbols]] tables"
        )
    if len(run.rows) > MAX_INTENTS or (run.rows["host"] != host).any():
        raise WireError(f"intents of {name} from {run.source!r} name another host or are too many")
    return run


def events_headers(
    source: str, epoch: int, first: int, n: int, taken: int, host: str
) -> dict[str, str]:
    headers = run_headers(
        source, epoch, first, n, "", f"{source}.{epoch}.{host}.r{first}+{n}.t{taken}"
    )
    headers[KIND] = EVENTS
    headers[TAKEN] = str(taken)
    return headers


def decode_events(data: bytes, headers: Mapping[str, str] | None) -> tuple[Run, int]:
    """(report run, taken watermark) of an events message."""
    run = decode_run(data, headers, REPORT, "reports", "seq")
    return run, header_int(headers, TAKEN, "reports")


def reset_messages(
    source: str,
    epoch: int,
    head: int,
    taken: int,
    positions: np.ndarray,
    host: str,
    checkpoint: bool,
) -> list[tuple[bytes, dict[str, str]]]:
    """The parts of one reset of ``positions`` (agents x symbols). FIRST_PART is filled in
    by the sender once part 0 is stored. A checkpoint is a reset sent after every report
    it includes: a host that applied every report has these positions already."""
    rows, cols = np.nonzero(positions)
    cells = np.zeros(len(rows), CELL)
    cells["row"], cells["col"], cells["qty"] = rows, cols, positions[rows, cols]
    chunks = [cells[i : i + MAX_CELLS] for i in range(0, len(cells), MAX_CELLS)] or [cells]
    out = []
    for i, chunk in enumerate(chunks):
        headers = {
            MSG_ID: f"{source}.{epoch}.{host}.z{head}.t{taken}.{i}",
            KIND: RESET,
            EPOCH: str(epoch),
            HEAD: str(head),
            TAKEN: str(taken),
            PART: str(i),
            PARTS: str(len(chunks)),
            SHAPE: f"{positions.shape[0]},{positions.shape[1]}",
            CHECKPOINT: "1" if checkpoint else "0",
            COUNT: str(len(chunk)),
        }
        out.append((chunk.tobytes(), headers))
    return out


@dataclass
class Reset:
    """A reset being put together from its parts (they come one after the other)."""

    epoch: int
    head: int
    taken: int
    positions: np.ndarray
    parts: int
    checkpoint: bool
    got: int = 0

    @property
    def complete(self) -> bool:
        return self.got == self.parts


def reset_part(
    data: bytes, headers: Mapping[str, str] | None, shape: tuple[int, int], current: Reset | None
) -> Reset | None:
    """Add one part to ``current`` (or start a reset at part 0); None if the part does not
    belong (a reset whose first parts this reader never saw)."""
    part = header_int(headers, PART, "reset")
    got = tuple(int(x) for x in (headers or {}).get(SHAPE, "").split(",") if x)
    if got != shape:
        raise WireError(f"reset of a {got} positions table, ours is {shape}")
    if part == 0:
        current = Reset(
            header_int(headers, EPOCH, "reset"),
            header_int(headers, HEAD, "reset"),
            header_int(headers, TAKEN, "reset"),
            np.zeros(shape, np.float64),
            header_int(headers, PARTS, "reset"),
            (headers or {}).get(CHECKPOINT) == "1",
        )
    elif current is None or part != current.got:
        return None
    cells = np.frombuffer(data, CELL)
    if len(cells) != header_int(headers, COUNT, "reset") or (
        len(cells) and (cells["row"].max() >= shape[0] or cells["col"].max() >= shape[1])
    ):
        raise WireError("reset part does not fit its header or the positions table")
    current.positions[cells["row"], cells["col"]] = cells["qty"]
    current.got += 1
    return current


@dataclass
class ReportFollower:
    """Which of a remote host's reports an agents instance has applied: those of one
    execution lifetime (``epoch``) before ``next_pos``."""

    epoch: int = 0
    next_pos: int = 0
    holes: int = 0  # reports that never came (should stay 0: a reset repairs positions)
    stale: int = 0  # reports of a lifetime whose reset was not seen, ignored

    def accept(self, run: Run) -> np.ndarray:
        """The reports of ``run`` to apply now (duplicates and strays dropped)."""
        if run.epoch != self.epoch:
            self.stale += len(run.rows)
            return run.rows[:0]
        if run.first > self.next_pos:
            self.holes += run.first - self.next_pos
        rows = run.rows[run.rows["seq"] >= self.next_pos]
        self.next_pos = max(self.next_pos, run.end)
        return rows

    def reset(self, epoch: int, head: int) -> None:
        self.epoch, self.next_pos = epoch, head

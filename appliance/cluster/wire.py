"""What crosses NATS: subjects, stream settings, message headers and their checks.

Payloads are runs of the appliance's own 64-byte records (TICK, INTENT, REPORT), never
JSON; what a run is (who sent it, which lifetime of the sender's segments, the sequence
number of its first record, how many) travels in NATS headers, readable with the ``nats``
CLI. Every decode checks the sizes and the numbering against the headers, so a mangled or
foreign message is an error naming what is wrong, never a misread.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Header names (NATS headers are strings).
MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
SOURCE = "Dm-Source"  # instance name of the sender
EPOCH = "Dm-Epoch"  # lifetime of the sender's segments (their creation time, ns)
SEQ = "Dm-Seq"  # sequence number of the first record of the run
COUNT = "Dm-Count"  # records in the run
LAYOUT = "Dm-Layout"  # fingerprint of what the record indexes mean (symbols, agents)
KIND = "Dm-Kind"  # what a message on a reports subject is: see orders.py


class WireError(ValueError):
    """A message that does not decode: wrong size, numbering or layout."""


@dataclass(frozen=True)
class Subjects:
    """Subject names under one prefix: ``<prefix>.ticks.<instance>``,
    ``<prefix>.intents.<host>``, ``<prefix>.reports.<host>.<reset|events>``."""

    prefix: str

    def ticks(self, instance: str) -> str:
        return f"{self.prefix}.ticks.{instance}"

    def intents(self, host: str) -> str:
        return f"{self.prefix}.intents.{host}"

    def reports(self, host: str, kind: str) -> str:
        return f"{self.prefix}.reports.{host}.{kind}"

    def reports_all(self, host: str) -> str:
        return f"{self.prefix}.reports.{host}.>"

    def wildcard(self, kind: str) -> str:
        return f"{self.prefix}.{kind}.>"


@dataclass(frozen=True)
class StreamSpec:
    """One JetStream stream: its subjects and what it keeps (limits retention)."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    max_bytes: int
    replicas: int
    duplicate_window_s: float = 120.0


def fingerprint(parts: Sequence[object]) -> str:
    """A short text naming a layout (symbol names, agent counts): equal layouts, equal text."""
    return f"{zlib.crc32(repr(list(parts)).encode()):08x}"


def run_headers(
    source: str, epoch: int, first: int, count: int, layout: str, msg_id: str
) -> dict[str, str]:
    return {
        MSG_ID: msg_id,
        SOURCE: source,
        EPOCH: str(epoch),
        SEQ: str(first),
        COUNT: str(count),
        LAYOUT: layout,
    }


@dataclass(frozen=True)
class Run:
    """A decoded run of records: who sent it and the records (a copy, owned)."""

    source: str
    epoch: int
    first: int
    layout: str
    rows: np.ndarray

    @property
    def end(self) -> int:
        """Sequence number after the run's last record."""
        return self.first + len(self.rows)


def header_int(headers: Mapping[str, str] | None, name: str, what: str) -> int:
    try:
        return int((headers or {})[name])
    except (KeyError, ValueError):
        raise WireError(f"{what}: header {name} missing or not an integer") from None


def decode_run(
    data: bytes, headers: Mapping[str, str] | None, dtype: np.dtype, what: str, seq_field: str
) -> Run:
    """Rows of ``dtype`` from a message, checked against its headers.

    ``seq_field`` of every row must number the run from its ``Dm-Seq`` header on, one by
    one (the sender's own sequence numbers, kept across the hop).
    """
    headers = headers or {}
    count = header_int(headers, COUNT, what)
    first = header_int(headers, SEQ, what)
    epoch = header_int(headers, EPOCH, what)
    if len(data) != count * dtype.itemsize:
        raise WireError(f"{what}: {len(data)} bytes for {count} records of {dtype.itemsize} bytes")
    rows = np.frombuffer(data, dtype=dtype).copy()
    if count and not np.array_equal(
        rows[seq_field], np.arange(first, first + count, dtype=rows[seq_field].dtype)
    ):
        raise WireError(f"{what}: records are not numbered {first}..{first + count - 1}")
    return Run(headers.get(SOURCE, ""), epoch, first, headers.get(LAYOUT, ""), rows)

"""The board: what the supervisor knows about the appliance as a whole, for outside readers.

The stats segment says how each process is doing; the board says what only the
supervisor knows: the trading state and why, PnL and fees as execution last reported them,
the outcome of the last reload, and the phase (starting, running, halting, stopping). One
record in a SharedSnapshot (seqlock), written by the supervisor, read by `dynamind status`,
`top` and `reload` without locks.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from appliance.shm.segment import Segment
from appliance.shm.snapshot import SharedSnapshot

NAME = "board"
TEXT = 240  # bytes of each free-text field (UTF-8, cut at a character boundary)

BOARD = np.dtype(
    [
        ("updated_ns", "<i8"),  # wall clock of the last write
        ("phase", "S16"),
        ("trading", "S16"),  # active / reduce_only / halted, as execution reported it
        ("trading_why", f"S{TEXT}"),
        ("realized", "<f8"),
        ("unrealized", "<f8"),
        ("fees", "<f8"),
        ("fills", "<i8"),
        ("rejects", "<i8"),
        ("open_orders", "<i8"),
        ("restarts", "<i8"),
        ("reload_count", "<i8"),  # reloads finished (applied or rejected)
        ("reload_ok", "<i8"),  # 1: the last one applied, 0: rejected
        ("reload_ns", "<i8"),  # wall clock when the last one finished
        ("reload_note", f"S{TEXT}"),
    ]
)
_TEXT_FIELDS = [n for n in BOARD.names if BOARD[n].kind == "S"]


def _encode(text: str, size: int) -> bytes:
    raw = text.encode()
    if len(raw) <= size:
        return raw
    return raw[: size - 3].decode(errors="ignore").encode() + b"..."


class Board:
    """The supervisor writes (``create``, ``update``); anyone reads (``attach``, ``read``)."""

    def __init__(self, snapshot: SharedSnapshot) -> None:
        self._snap = snapshot
        self._mine = np.zeros(1, BOARD)  # the writer's copy, published whole

    @classmethod
    def create(cls, instance: str, group: int | str | None = None) -> Board:
        return cls(SharedSnapshot.create(instance, NAME, BOARD, (1,), group))

    @classmethod
    def attach(cls, instance: str) -> Board:
        return cls(SharedSnapshot.attach(instance, NAME, BOARD, (1,), read_only=True))

    def update(self, **fields: Any) -> None:
        """Change some fields and publish the whole record."""
        rec = self._mine[0]
        for key, value in fields.items():
            rec[key] = _encode(value, BOARD[key].itemsize) if key in _TEXT_FIELDS else value
        rec["updated_ns"] = time.time_ns()
        self._snap.write(self._mine)

    def read(self) -> dict[str, Any]:
        data, _, _ = self._snap.read()
        rec = data[0]
        return {
            n: rec[n].decode(errors="replace") if n in _TEXT_FIELDS else rec[n].item()
            for n in BOARD.names
        }

    @property
    def owner_pid(self) -> int:
        return self._snap.segment.owner_pid

    @property
    def segment(self) -> Segment:
        return self._snap.segment

    def close(self) -> None:
        self._snap.close()

    def destroy(self) -> None:
        self._snap.destroy()

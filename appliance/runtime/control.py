"""The control plane: small orjson messages over faster-fifo queues, never the hot path.

faster-fifo's lock is not robust to a process that dies holding it, so every worker
incarnation gets a fresh pair of queues (down: supervisor to worker; up: worker to
supervisor) and the old pair is dropped with the dead process.
"""

from __future__ import annotations

from typing import Any

import faster_fifo
import orjson

QUEUE_BYTES = 1 << 20


class Channel:
    """One direction of the control plane. Sending never blocks; receiving never waits."""

    def __init__(self) -> None:
        self._q = faster_fifo.Queue(QUEUE_BYTES, loads=orjson.loads, dumps=orjson.dumps)

    def send(self, kind: str, **fields: Any) -> bool:
        """Queue a message; False if the queue is full (the receiver is not listening)."""
        try:
            self._q.put({"kind": kind, **fields}, block=False)
        except faster_fifo.Full:
            return False
        return True

    def receive(self, limit: int = 100) -> list[dict[str, Any]]:
        """Every queued message, up to ``limit``, without waiting."""
        out: list[dict[str, Any]] = []
        # One get_many returns only what fits its read buffer (a few kB): read until empty.
        while len(out) < limit:
            try:
                out += self._q.get_many(block=False, max_messages_to_get=limit - len(out))
            except faster_fifo.Empty:
                break
        return out

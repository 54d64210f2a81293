"""The control plane: typed messages (messages.py) over faster-fifo queues, never the hot path.

faster-fifo's lock is not robust to a process that dies holding it, so every worker
incarnation gets a fresh pair of channels (down: supervisor to worker; up: worker to
supervisor) and the old pair is dropped with the dead process.

Messages are decoded here, once: a receiver gets message objects, and bytes that are not a
message of the channel's direction are logged with their content and dropped.
"""

from __future__ import annotations

import logging
from typing import Literal

import faster_fifo

from appliance.runtime.messages import BadMessage, Decoder, Down, Message, Up, encode

log = logging.getLogger(__name__)

QUEUE_BYTES = 1 << 20
GET_BATCH = 256
SHOWN_BYTES = 1000  # of a dropped message, in the log

Direction = Literal["down", "up"]
_DECODERS = {"down": Decoder(Down), "up": Decoder(Up)}


def _as_is(raw: bytes) -> bytes:
    return raw


class Channel:
    """One direction of the control plane. Sending never blocks; receiving never waits."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        # Bytes in, bytes out: decoding inside faster-fifo would lose the rest of a batch
        # to one bad message. ``bytes`` copies out of faster-fifo's reused buffer.
        self._q = faster_fifo.Queue(QUEUE_BYTES, loads=bytes, dumps=_as_is)

    def send(self, message: Message) -> bool:
        """Queue a message; False if the queue is full (the receiver is not listening)."""
        return self.put_encoded(encode(message))

    def put_encoded(self, raw: bytes) -> bool:
        """Queue already encoded bytes (what :meth:`send` does after encoding)."""
        try:
            self._q.put(raw, block=False)
        except faster_fifo.Full:
            return False
        return True

    def receive(self) -> list[Message]:
        """Every queued message, without waiting.

        Reads until the queue is empty: one faster-fifo read returns only the messages that
        fit its buffer (it grows the buffer only when not even the first one fits), so a
        large message behind small ones would otherwise stay queued.
        """
        decoder = _DECODERS[self.direction]
        out: list[Message] = []
        while True:
            try:
                batch = self._q.get_many(block=False, max_messages_to_get=GET_BATCH)
            except faster_fifo.Empty:
                return out
            for raw in batch:
                try:
                    out.append(decoder.decode(raw))
                except BadMessage as exc:
                    log.error(
                        "dropped a control message (%s channel): %s; content (%d bytes): %r",
                        self.direction,
                        exc,
                        len(raw),
                        raw[:SHOWN_BYTES],
                    )

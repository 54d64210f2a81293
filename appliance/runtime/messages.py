"""Typed control messages between the supervisor and its workers: one class per kind.

msgspec Structs, tagged by a ``kind`` field: encoding is one call, and decoding checks the
kind and every field's type against the class in the same pass, so a receiver gets either
an instance of one of these classes or a clear error, never a half-understood dict. Each
direction has its own union: a message of the other direction is refused like an unknown one.

Down (supervisor to worker): :class:`Stop`, :class:`Drain`, :class:`Reload`.
Up (worker to supervisor): :class:`Ready`, :class:`Status`, :class:`Error`,
:class:`PositionsCheck`, :class:`Final`.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from appliance.trading.engine import EngineStatus


class Message(msgspec.Struct, frozen=True, tag_field="kind", forbid_unknown_fields=True):
    """Base of every control message; the class name is not on the wire, ``kind`` is."""


# -- down: supervisor to worker -------------------------------------------------------------


class Stop(Message, tag="stop"):
    """Stop intake and leave the loop (execution: unless draining).

    ``check``: agent hosts compare their positions with execution's first; False when
    execution takes no intents (its storage fails), so the comparison could never settle.
    """

    check: bool = True


class Drain(Message, tag="drain"):
    """Execution: take every queued intent, record the drained heads, then leave."""


class Reload(Message, tag="reload"):
    """The running config changed live; ``config`` is its JSON form (``model_dump``)."""

    config: dict[str, Any]


# -- up: worker to supervisor ---------------------------------------------------------------


class Ready(Message, tag="ready"):
    """Attached and recovered: the worker runs from now on."""


class Status(Message, tag="status"):
    """Execution's figures for the status line: counters, trading state, PnL."""

    figures: EngineStatus


class Error(Message, tag="error"):
    """The role's main raised; the worker exits non-zero after sending this."""

    error: str


class PositionsCheck(Message, tag="positions_check"):
    """An agent host's positions compared with execution's at a clean stop.

    ``differ`` lists [population, agent, host's qty, execution's qty] of disagreeing agents
    (at most a few per population); ``skipped`` says why nothing was compared.
    """

    checked: int
    differ: list[tuple[int, int, float, float]] = []
    skipped: str = ""


class Final(Message, tag="final"):
    """Execution's report at a clean stop: positions held, and whether the journal and the
    positions reported to hosts agree with them. ``positions`` rows are
    [host, population, agent, symbol, qty] of every non-flat position."""

    positions: list[tuple[int, int, int, int, float]]
    journal_matches: bool
    reported_matches: bool


Down = Stop | Drain | Reload
Up = Ready | Status | Error | PositionsCheck | Final


def _numpy_scalar(obj: Any) -> Any:
    # Figures computed with numpy arrive as numpy scalars; on the wire they are numbers.
    if isinstance(obj, np.generic):
        return obj.item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__} in a control message")


_encoder = msgspec.json.Encoder(enc_hook=_numpy_scalar)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


class Decoder:
    """Decodes the messages of one direction (``Down`` or ``Up``)."""

    def __init__(self, union: Any) -> None:
        self._decoder = msgspec.json.Decoder(union)

    def decode(self, raw: bytes) -> Message:
        """The message in ``raw``; :class:`BadMessage` naming the problem otherwise."""
        try:
            return self._decoder.decode(raw)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
            raise BadMessage(str(exc)) from None


class BadMessage(ValueError):
    """Bytes that are not a message of the expected direction (unknown kind, bad field)."""

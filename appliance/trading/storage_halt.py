"""Execution on a full or failing disk: take no intents, halt, resume by itself.

When a write of the journal or of the paper venue's state file fails because the
filesystem is full or failing (``storage.sqlite.storage_failure``), the engine's memory may
hold what the files do not (a batch applied but not committed, orders the venue matched
but could not store). So the engine is dropped, as a crash would drop it: execution takes
no intents (they stay in their queues), reports trading HALTED with the reason, and every
``retry_s`` probes each file's filesystem for ``RESERVE_BYTES`` of room (a write that
reuses a page SQLite already holds proves nothing; without room to spare a resumed engine
would halt again at its next batch). When every probe succeeds it starts a new engine, whose
recovery writes (a new run): that engine has settled everything from the journal and the
venue exactly as after a crash, and takes the intents still queued (those the old one
journaled are recognised, never executed twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import msgspec

from appliance.model.enums import TradingState
from appliance.storage.sqlite import probe_space, storage_failure
from appliance.trading.engine import EngineStatus, ExecutionEngine
from appliance.trading.recovery import RecoverySummary

log = logging.getLogger(__name__)

RETRY_S = 1.0  # between two probes while the disk refuses writes
RESERVE_BYTES = 1 << 20  # room a filesystem must have before trading resumes on it
P = ParamSpec("P")
T = TypeVar("T")


class StorageHalt:
    """The engine, or none while its files cannot be written (``reason`` says why)."""

    def __init__(
        self,
        make: Callable[[], ExecutionEngine],
        epoch: str | int | None,
        files: Sequence[Path],
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._make = make
        self._epoch = epoch
        self._dirs = sorted({Path(f).resolve().parent for f in files})  # what ``make`` writes
        self.retry_s = retry_s
        self._clock = clock
        self.engine: ExecutionEngine | None = None
        self.reason = ""  # empty while writes succeed
        self._next_try = 0.0
        self._last = EngineStatus()  # the last engine's figures, shown while halted

    def start(self) -> RecoverySummary | None:
        """A new engine, recovered; None (and halted) if the disk refused a write."""
        engine = None
        try:
            engine = self._make()
            summary = engine.recover(self._epoch)
        except Exception as exc:
            if engine is not None:
                _close(engine)
            if not self._failed(exc):
                raise
            return None
        self.engine = engine
        if self.reason:
            log.warning("storage writable again: trading resumes (was: %s)", self.reason)
            self.reason = ""
        return summary

    def retry(self) -> RecoverySummary | None:
        """While halted and a retry is due: ``start`` once every file has room again."""
        if self.engine is not None or self._clock() < self._next_try:
            return None
        self._next_try = self._clock() + self.retry_s
        if any(probe_space(d, RESERVE_BYTES) for d in self._dirs):
            return None
        return self.start()

    def call(
        self, fn: Callable[Concatenate[ExecutionEngine, P], T], *args: P.args, **kw: P.kwargs
    ) -> T | None:
        """``fn(engine, ...)``; None when halted, or when this call's write failed (the
        engine is then dropped). Any other error propagates."""
        if self.engine is None:
            return None
        try:
            return fn(self.engine, *args, **kw)
        except Exception as exc:
            if not self._failed(exc):
                raise
            return None

    def _failed(self, exc: Exception) -> bool:
        why = storage_failure(exc)
        if why is None:
            return False
        self._next_try = self._clock() + self.retry_s
        if self.engine is not None:
            self._last = self.engine.status()
            _close(self.engine)
            self.engine = None
        if not self.reason:
            self.reason = f"storage failing: {why}"
            log.error(
                "trading HALTED, %s: no intent is taken (they stay queued) until a write "
                "succeeds; retrying every %gs",
                self.reason,
                self.retry_s,
            )
        return True

    def status(self) -> EngineStatus:
        """The engine's status; while halted the last one's figures, trading halted,
        ``trading_why`` the reason and ``takes_intents`` False."""
        if self.engine is not None:
            return self.engine.status()
        return msgspec.structs.replace(
            self._last,
            trading=TradingState.HALTED.value,
            trading_why=self.reason,
            takes_intents=False,
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def _close(engine: ExecutionEngine) -> None:
    """Close what a failed write left: closing may itself fail on that disk."""
    try:
        engine.close()
    except Exception as exc:
        log.warning("closing the engine after a storage failure: %s", exc)

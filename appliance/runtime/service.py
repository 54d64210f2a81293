"""What the supervisor tells the service manager and the operator's tools.

One place for the appliance's outward account of itself: sd_notify (READY, STATUS,
RELOADING, WATCHDOG, STOPPING), the board segment (read by `dynamind status`, `top` and
`reload`), and the status log line, so the three always say the same thing in the same
words.

The watchdog is a health claim, not a sign of life: it is pinged only while every ready
worker has beaten within the ping interval (half of systemd's WatchdogSec). The
supervisor kills and restarts a hung worker after ``heartbeat_timeout_s``, well inside
that; if a worker stays hung anyway, the pings stop and systemd restarts the appliance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from appliance.config import Change
from appliance.runtime.board import Board
from appliance.runtime.sdnotify import Notifier

log = logging.getLogger("appliance.runtime.supervisor")

# The figures of a status line, in order: (field, how text shows it). JSON logs carry the
# fields as numbers; `dynamind status` and `top` use the same names.
STATUS_FIELDS: tuple[tuple[str, str], ...] = (
    ("trading", "{}"),
    ("ticks_per_s", "{:,.0f}"),
    ("intents_per_s", "{:,.0f}"),
    ("fills", "{:,}"),
    ("rejects", "{:,}"),
    ("pnl_net", "{:,.2f}"),
    ("fees", "{:,.2f}"),
    ("ring_lost", "{:,}"),
    ("restarts", "{:,}"),
)


def pnl_net(realized: float, unrealized: float, fees: float) -> float:
    """PnL after fees: what the appliance made (realised PnL is gross of fees)."""
    return realized + unrealized - fees


def stale_workers(
    workers: Iterable[tuple[str, int]], heartbeats: np.ndarray, max_age_ns: int
) -> list[str]:
    """Names of ``(name, stats slot)`` workers whose heartbeat is older than ``max_age_ns``."""
    now = time.monotonic_ns()
    return [name for name, slot in workers if now - int(heartbeats[slot]) > max_age_ns]


class ServiceReport:
    """sd_notify, board and status lines for one supervisor."""

    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier()
        self.board: Board | None = None
        self.trading_why = "config trading.state"
        self._reload_note = ""  # kept in STATUS= until a reload applies again
        self._next_ping = 0.0
        self._withheld: tuple[str, ...] = ()

    def open_board(self, board: Board, trading: str) -> None:
        """Write on ``board``; ``trading`` is the configured state until execution reports."""
        self.board = board
        self.board.update(phase="starting", trading=trading, trading_why=self.trading_why)

    def _board(self, **fields: Any) -> None:
        if self.board is not None:
            self.board.update(**fields)

    # -- lifecycle -------------------------------------------------------------------------

    def ready(self, workers: int) -> None:
        self._board(phase="running")
        self.notifier.ready(f"running {workers} workers")

    def halting(self, reason: str) -> None:
        """The restart-intensity limit tripped: nothing may look active from now on."""
        self.trading_why = f"restart-intensity limit: {reason}"
        self._board(phase="halting", trading="halted", trading_why=self.trading_why)
        self.notifier.status(f"HALTED: {reason}; stopping (a person must look)")

    def stopping(self) -> None:
        self._board(phase="stopping")
        self.notifier.stopping()

    def trading_changed(self, old: str, new: str, how: str) -> None:
        self.trading_why = f"{how}: trading.state {old} -> {new}"

    # -- status ------------------------------------------------------------------------------

    def status(self, s: dict[str, Any]) -> None:
        """Publish one status: log line (fields), STATUS= and the board."""
        fields = {k: s[k] for k, _ in STATUS_FIELDS}
        fields["pnl_net"] = round(fields["pnl_net"], 2)
        fields["fees"] = round(fields["fees"], 2)
        fields["ticks_per_s"] = round(fields["ticks_per_s"])
        fields["intents_per_s"] = round(fields["intents_per_s"])
        log.info("status", extra=fields)
        text = ", ".join(f"{k}={fmt.format(fields[k])}" for k, fmt in STATUS_FIELDS)
        why = (s.get("trading_why") or self.trading_why) if s["trading"] != "active" else ""
        notes = [f"trading {s['trading']}: {why}" if why else "", self._reload_note]
        self.notifier.status("; ".join([text, *filter(None, notes)]))
        self._board(
            trading=s["trading"],
            trading_why=why,
            realized=s["realized_pnl"],
            unrealized=s["unrealized_pnl"],
            fees=s["fees"],
            fills=s["fills"],
            rejects=s["rejects"],
            open_orders=s.get("open_orders", 0),
            restarts=s["restarts"],
        )

    # -- reload ------------------------------------------------------------------------------

    def reloading(self) -> None:
        self._board(phase="reloading")
        self.notifier.reloading()

    def reload_applied(
        self, live: Sequence[Change], restarted: Mapping[str, Sequence[Change]]
    ) -> None:
        """Log what changed (nothing else): live, or by restarting which process; READY=1."""
        for c in live:
            log.info("applied live: %s", c)
        for name, changes in restarted.items():
            for c in changes:
                log.info("applied by a restart of %s: %s", name, c)
        n = len(live) + sum(len(c) for c in restarted.values())
        if not n:
            note = "reload: config unchanged"
        else:
            note = f"reload: {n} change(s) applied" + (
                f", restarting {', '.join(restarted)}" if restarted else ""
            )
        log.info(note)
        self._reload_note = ""
        self._finish_reload(True, note)

    def reload_rejected(self, error: str) -> None:
        first = error.splitlines()[0] if error else "invalid config"
        log.error("reload rejected, keeping the running config: %s", error)
        self._reload_note = f"reload REJECTED at {time.strftime('%H:%M:%S')}: {first}"
        self._finish_reload(False, f"reload rejected: {error}")

    def _finish_reload(self, ok: bool, note: str) -> None:
        count = 1 + (self.board.read()["reload_count"] if self.board is not None else 0)
        self._board(
            phase="running",
            reload_count=count,
            reload_ok=int(ok),
            reload_ns=time.time_ns(),
            reload_note=note,
        )
        self.notifier.reloaded(self._reload_note or note)

    # -- watchdog ----------------------------------------------------------------------------

    def watchdog(self, now: float, stale: Sequence[str]) -> None:
        """Ping systemd's watchdog when due, unless a ready worker is stale."""
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        if stale:
            if tuple(stale) != self._withheld:
                self._withheld = tuple(stale)
                msg = f"watchdog withheld: no heartbeat from {', '.join(stale)}"
                log.error(msg)
                self.notifier.status(msg)
            return
        if self._withheld:
            log.warning("watchdog resumed: every worker beats again")
            self._withheld = ()
        if now >= self._next_ping:
            self._next_ping = now + interval
            self.notifier.watchdog()

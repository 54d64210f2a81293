"""Message handling: what the supervisor does with each message its workers send up."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from appliance.model.numbers import tidy
from appliance.runtime.children import Child
from appliance.runtime.messages import Error, Final, Message, PositionsCheck, Ready, Status
from appliance.trading.engine import EngineStatus

log = logging.getLogger(__name__)


class Inbox:
    """Reads the children's up channels and acts on each message by its type."""

    def __init__(self) -> None:
        self.last_status: dict[str, EngineStatus] = {}  # figures, by process name

    def read_all(self, children: Iterable[Child]) -> None:
        for child in children:
            self.read(child)

    def read(self, child: Child) -> None:
        if child.up is None or child.killed:
            return
        for msg in child.up.receive():
            self.handle(child, msg)

    def handle(self, child: Child, msg: Message) -> None:
        name = child.name
        match msg:
            case Ready():
                child.ready = True
            case Status(figures=figures):
                self.last_status[name] = figures
            case Error(error=error):
                child.error = error
                log.error("%s reported: %s", name, error)
            case PositionsCheck():
                _log_positions_check(name, msg)
            case Final():
                log.info(
                    "final positions: %d non-flat, journal %s, reported to hosts %s",
                    len(msg.positions),
                    "agrees" if msg.journal_matches else "DIFFERS",
                    "agrees" if msg.reported_matches else "DIFFERS",
                    extra={"positions": [(*key, tidy(qty)) for *key, qty in msg.positions]},
                )
            case _:
                log.error("%s sent a message the supervisor does not take: %r", name, msg)


def _log_positions_check(name: str, msg: PositionsCheck) -> None:
    if msg.differ:
        log.error(
            "%s positions check: agents DIFFER from execution "
            "([population, agent, host's, execution's]): %s",
            name,
            msg.differ,
        )
    else:
        log.info(
            "%s positions check: %d settled agents agree with execution%s",
            name,
            msg.checked,
            f" ({msg.skipped})" if msg.skipped else "",
        )

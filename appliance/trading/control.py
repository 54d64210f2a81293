"""The trading state, who set it and why, journaled at every change.

Who changes it: the config (at start, and a reload that changes trading.state), the
operator (`dynamind trading`, `dynamind flatten`) and the drawdown kill switch. Every
change is a journal row (state, previous, who, why) committed before it takes effect.

An execution process restarted within the same appliance lifetime (the same queue epoch)
takes up the state its predecessor last journaled: a halt does not end with a crash. A new
lifetime starts from the config's trading.state.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from appliance.model.enums import TradingState
from appliance.trading.journal import Journal
from appliance.trading.risk import RiskEngine

CONFIG = "config"  # who: the config at start
RELOAD = "config reload"  # who: a reload that changed trading.state


class TradingControl:
    """Holds the state for ``risk`` (which applies it) and journals its changes."""

    def __init__(
        self, risk: RiskEngine, journal: Journal, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.risk = risk
        self.journal = journal
        self._clock = clock
        self.who = CONFIG
        self.why = "config trading.state"
        self.since_ns = clock()
        self._started = False

    @property
    def state(self) -> TradingState:
        return self.risk.state

    def start(self, epoch: str) -> None:
        """The run began: take up the state journaled last in ``epoch``, or journal the
        configured one."""
        self._started = True
        last = self.journal.trading_states(epoch)
        if last:
            prev = last[-1]
            why = f"restored after an execution restart: {prev.why}"
            self._apply(TradingState(prev.state), prev.who, why)
        else:
            self._apply(self.state, self.who, self.why)

    def set(self, state: TradingState | str, who: str, why: str) -> bool:
        """Change the state; False (nothing journaled) when it already is ``state``."""
        state = TradingState(state)
        if state is self.state and self._started:
            return False
        if self._started:
            self._apply(state, who, why)
        else:  # before the run begins: journaled by start()
            self.risk.set_state(state)
            self.who, self.why = who, why
        return True

    def _apply(self, state: TradingState, who: str, why: str) -> None:
        now = self._clock()
        self.journal.record_trading_state(state.value, self.state.value, who, why, now)
        self.risk.set_state(state)
        self.who, self.why, self.since_ns = who, why, now

    def describe(self) -> str:
        """Why trading is in its state, for status lines and the board."""
        return self.why if self.who in (CONFIG, RELOAD) else f"{self.why} ({self.who})"

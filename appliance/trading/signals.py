"""Signal accuracy: did the mid move the way an agent's signal said, over its horizon?

A signal is an intent: its side is the direction the agent expects (buy: the mid will
rise). It is taken at the mid of its symbol when the intent is processed (time t, mid m0)
and scored at the first mid of the symbol observed at or after t + horizon (m1):
correct when side * (m1 - m0) > 0, wrong when < 0, flat when the mid did not move.
Accuracy = correct / (correct + wrong); flat signals are counted but not scored. A signal
without a mid at t is not taken. Signals still waiting for their horizon are pending.
"""

from __future__ import annotations

import numpy as np

_FIELDS = (("due", np.int64), ("symbol", np.int64), ("side", np.int64),
           ("mid", np.float64), ("key", np.int64))  # fmt: skip


class SignalBook:
    """Pending signals as arrays, scored against the ticks that follow (see the module).
    ``key`` is the caller's identity of whose signal it is (e.g. a ledger row)."""

    def __init__(self) -> None:
        self._pending = {name: np.zeros(0, dt) for name, dt in _FIELDS}

    @property
    def pending(self) -> int:
        return len(self._pending["due"])

    def add(
        self,
        key: np.ndarray,
        symbol: np.ndarray,
        side: np.ndarray,
        mid: np.ndarray,
        due_ns: np.ndarray,
    ) -> None:
        keep = np.isfinite(mid)
        new = {"due": due_ns, "symbol": symbol, "side": side, "mid": mid, "key": key}
        for name, dt in _FIELDS:
            self._pending[name] = np.concatenate(
                [self._pending[name], np.asarray(new[name])[keep].astype(dt)]
            )

    def on_mids(
        self, times: np.ndarray, symbol: np.ndarray, mid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score the pending signals that the observed mids (in time order) resolve:
        (keys, outcome) with outcome +1 correct, -1 wrong, 0 flat."""
        p = self._pending
        none = (np.zeros(0, np.int64), np.zeros(0, np.int64))
        if not len(p["due"]) or not len(times):
            return none
        exit_mid = np.full(len(p["due"]), np.nan)
        for s in np.unique(symbol).tolist():
            mine = symbol == s
            t_s, m_s = times[mine], mid[mine]
            waiting = np.flatnonzero((p["symbol"] == s) & (p["due"] <= t_s[-1]))
            if len(waiting):
                at = np.searchsorted(t_s, p["due"][waiting], side="left")
                exit_mid[waiting] = m_s[at]
        done = np.isfinite(exit_mid)
        if not done.any():
            return none
        outcome = np.sign(p["side"][done] * (exit_mid[done] - p["mid"][done])).astype(np.int64)
        keys = p["key"][done]
        for name in p:
            p[name] = p[name][~done]
        return keys, outcome

    def state(self) -> dict[str, np.ndarray]:
        return {f"signals.{k}": v for k, v in self._pending.items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        for name, dt in _FIELDS:
            self._pending[name] = np.asarray(state[f"signals.{name}"]).astype(dt)

"""Pre-trade checks over the whole account: gross exposure, order rates, drawdown.

These depend on everything that passed before them (other agents, earlier batches), so
they run after the per-symbol checks of risk.py, one passing intent at a time:

- gross exposure: per symbol the account's worst-case position, its net position plus
  every open order on one side (as if they all fill), valued at the mid; summed over the
  symbols. An intent that would take the sum above ``max_gross_exposure`` and grows it is
  rejected (MAX_GROSS_EXPOSURE); one that shrinks it always passes;
- order rate: token buckets, one per agent and one for the account. Each intent that
  passes every other check takes a token from both; an empty bucket rejects it
  (ORDER_RATE). Buckets refill at ``rate`` tokens per second up to ``burst``;
- drawdown: ``drawdown`` says, given the account's net PnL (after fees), whether it has
  fallen ``max_drawdown`` below its peak since the engine started (or since the last
  ``rearm``); the engine then moves trading to ``drawdown_action``.

CANCEL intents are not checked here (they never trade).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from appliance.model.enums import TradingState
from appliance.model.records import OrderType, RejectReason

AgentKey = tuple[int, int, int]  # (host, population, agent)


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's settings: ``rate`` tokens per second, at most ``burst`` held."""

    rate: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.burst >= 1):
            raise ValueError(f"a rate needs rate > 0 and burst >= 1: {self}")


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """Limits of the whole account (None / inf: not limited)."""

    agent_rate: Rate | None = None  # intents per second of one agent
    rate: Rate | None = None  # intents per second of the whole account
    max_gross_exposure: float = math.inf  # quote currency
    max_drawdown: float = math.inf  # quote currency below the peak net PnL
    drawdown_action: TradingState = TradingState.REDUCE_ONLY

    def __post_init__(self) -> None:
        if not (self.max_gross_exposure >= 0 and self.max_drawdown >= 0):
            raise ValueError(f"account limits must be >= 0: {self}")
        if self.drawdown_action is TradingState.ACTIVE:
            raise ValueError("drawdown_action must be reduce_only or halted")


class _Bucket:
    __slots__ = ("at_ns", "tokens")

    def __init__(self, tokens: float, at_ns: int) -> None:
        self.tokens = tokens
        self.at_ns = at_ns

    def take(self, rate: Rate, now_ns: int) -> bool:
        """Refill for the time since the last call, then take one token if there is one."""
        elapsed = max(now_ns - self.at_ns, 0)
        self.tokens = min(rate.burst, self.tokens + elapsed * rate.rate / 1e9)
        self.at_ns = now_ns
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Book:
    """The account as the exposure check sees it, per symbol index: net positions, the
    unfilled quantity of every open buy and sell, and the mids (NaN: unknown)."""

    net: np.ndarray
    open_buy: np.ndarray
    open_sell: np.ndarray
    mid: np.ndarray


class AccountGuard:
    def __init__(self, limits: AccountLimits | None = None) -> None:
        self.limits = limits or AccountLimits()
        self._agents: dict[AgentKey, _Bucket] = {}
        self._account: _Bucket | None = None
        self.peak = -math.inf  # highest net PnL seen since start or rearm

    def set_limits(self, limits: AccountLimits) -> None:
        """New limits; buckets keep their tokens (capped by a smaller burst on next use)."""
        self.limits = limits

    # ---- pre-trade ------------------------------------------------------------------------

    def check(
        self,
        intents: np.ndarray,
        reasons: np.ndarray,
        qty: np.ndarray,
        price: np.ndarray,
        book: Book,
        now_ns: int,
    ) -> np.ndarray:
        """``reasons`` with the account's rejects added (a copy). ``qty`` in base units,
        ``price`` values an intent whose symbol has no mid."""
        out = np.array(reasons, np.uint8)
        live = (out == RejectReason.NONE) & (intents["order_type"] != OrderType.CANCEL)
        if not live.any():
            return out
        lim = self.limits
        idx = np.flatnonzero(live)
        if math.isfinite(lim.max_gross_exposure):
            for i in _over_exposure(intents, idx, qty, price, book, lim.max_gross_exposure):
                out[i] = RejectReason.MAX_GROSS_EXPOSURE
            idx = idx[out[idx] == RejectReason.NONE]
        if lim.agent_rate is not None or lim.rate is not None:
            for i in self._over_rate(intents, idx, now_ns):
                out[i] = RejectReason.ORDER_RATE
        return out

    def _over_rate(self, intents: np.ndarray, idx: np.ndarray, now_ns: int) -> list[int]:
        lim = self.limits
        host, pop, agent = (intents[f][idx].tolist() for f in ("host", "population", "agent"))
        if lim.rate is not None and self._account is None:
            self._account = _Bucket(lim.rate.burst, now_ns)
        rejected = []
        for i, h, p, a in zip(idx.tolist(), host, pop, agent, strict=True):
            if lim.agent_rate is not None:
                b = self._agents.get((h, p, a))
                if b is None:
                    b = self._agents[(h, p, a)] = _Bucket(lim.agent_rate.burst, now_ns)
                if not b.take(lim.agent_rate, now_ns):
                    rejected.append(i)
                    continue
            if lim.rate is not None and not self._account.take(lim.rate, now_ns):
                rejected.append(i)
                if lim.agent_rate is not None:
                    b.tokens += 1.0  # not sent: the agent keeps its token
        return rejected

    # ---- drawdown -------------------------------------------------------------------------

    def drawdown(self, net_pnl: float) -> float | None:
        """How far ``net_pnl`` is below its peak when that trips the kill switch, else None."""
        if not math.isfinite(net_pnl):
            return None
        self.peak = max(self.peak, net_pnl)
        fall = self.peak - net_pnl
        return fall if fall >= self.limits.max_drawdown else None

    def rearm(self) -> None:
        """Trading resumed: the peak starts again from the next PnL seen."""
        self.peak = -math.inf


def _exposure(net: float, buy: float, sell: float, mark: float) -> float:
    return max(abs(net + buy), abs(net - sell)) * mark


def _over_exposure(
    intents: np.ndarray,
    idx: np.ndarray,
    qty: np.ndarray,
    price: np.ndarray,
    book: Book,
    cap: float,
) -> list[int]:
    """The intents among ``idx`` (batch order) that would take gross exposure above
    ``cap`` and grow it, each counted with the ones before it that pass."""
    sym = intents["symbol"][idx].astype(np.intp)
    mark = np.where(np.isfinite(book.mid[sym]), book.mid[sym], price[idx])
    # A symbol without a mid counts nothing until an intent values it at its own price.
    per_symbol = [
        _exposure(n, b, s, m) if math.isfinite(m) else 0.0
        for n, b, s, m in zip(book.net, book.open_buy, book.open_sell, book.mid, strict=True)
    ]
    total = math.fsum(per_symbol)
    # Each intent adds at most qty * mark: when all of them fit, nothing to walk through.
    if total + float(np.sum(qty[idx] * mark)) <= cap:
        return []
    buy, sell = book.open_buy.astype(float).copy(), book.open_sell.astype(float).copy()
    side = intents["side"][idx].tolist()
    rejected = []
    for i, s, d, m in zip(idx.tolist(), sym.tolist(), side, mark.tolist(), strict=True):
        before = _exposure(book.net[s], buy[s], sell[s], m)
        nb, ns = (buy[s] + qty[i], sell[s]) if d > 0 else (buy[s], sell[s] + qty[i])
        after = _exposure(book.net[s], nb, ns, m)
        if after > before and total - per_symbol[s] + after > cap * (1 + 1e-9):
            rejected.append(i)
            continue
        buy[s], sell[s] = nb, ns
        total += after - per_symbol[s]
        per_symbol[s] = after
    return rejected

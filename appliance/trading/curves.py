"""Equity curves sampled at a fixed interval, and their running statistics.

Every column (an agent, a population, a symbol, the whole appliance) is sampled at the
same instants: the multiples of the interval on the metrics clock. Between samples
nothing is kept per column but a handful of running sums, so a curve costs O(columns)
per sample however long it runs. Definitions and formulas: docs/metrics.md.

A gap in the data that skips k > 1 boundaries is k periods: the change of equity over
the gap is one return and the other k - 1 returns are zero (the curve was flat while
nothing was observed). That is what sampling in calendar time means, and it is done in
closed form, not by looping over the missing boundaries.
"""

from __future__ import annotations

import math

import numpy as np

SECONDS_PER_YEAR = 365 * 86_400  # crypto markets trade every day: no 252-day year


class Sampler:
    """Which sample boundaries a clock reading has crossed."""

    def __init__(self, interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"sample interval must be positive, got {interval_s}")
        self.interval_ns = round(interval_s * 1e9)
        self.next_ns: int | None = None  # the next boundary; None before the first reading

    @property
    def periods_per_year(self) -> float:
        return SECONDS_PER_YEAR * 1e9 / self.interval_ns

    def start(self, t_ns: int) -> int:
        """Anchor at the boundary at or before ``t_ns`` (the curves' zero); returns it."""
        first = t_ns - t_ns % self.interval_ns
        self.next_ns = first + self.interval_ns
        return first

    def crossed(self, t_ns: int) -> tuple[int, int]:
        """(boundaries crossed by reaching ``t_ns``, the time of the last one); (0, 0) if none."""
        if self.next_ns is None or t_ns < self.next_ns:
            return 0, 0
        k = (t_ns - self.next_ns) // self.interval_ns + 1
        last = self.next_ns + (k - 1) * self.interval_ns
        self.next_ns = last + self.interval_ns
        return int(k), int(last)


class CurveStats:
    """Running statistics of ``columns`` equity curves that start at 0 at ``t0_ns``.

    ``add`` takes the equity of every column at one sample (counting ``periods``
    boundaries, see the module docstring). ``history`` keeps every sample when asked
    (for plots of a few columns; agents' curves are not kept).
    """

    def __init__(self, columns: int, t0_ns: int = 0, keep_history: bool = False) -> None:
        self.columns = columns
        self.t0_ns = t0_ns
        self.periods = 0
        self.last = np.zeros(columns)
        self.sum = np.zeros(columns)
        self.sumsq = np.zeros(columns)
        self.down_sumsq = np.zeros(columns)
        self.peak = np.zeros(columns)
        self.peak_ns = np.full(columns, t0_ns, np.int64)
        self.max_drawdown = np.zeros(columns)
        self.max_drawdown_ns = np.zeros(columns, np.int64)
        self.history: list[tuple[int, np.ndarray]] | None = [] if keep_history else None
        if self.history is not None:
            self.history.append((t0_ns, np.zeros(columns)))

    def restart(self, t0_ns: int) -> None:
        """Set the start time (before any sample)."""
        self.t0_ns = t0_ns
        self.peak_ns[:] = t0_ns
        if self.history is not None:
            self.history[:] = [(t0_ns, np.zeros(self.columns))]

    def add(self, t_ns: int, equity: np.ndarray, periods: int = 1) -> None:
        r = equity - self.last
        self.periods += periods
        self.sum += r
        self.sumsq += r * r
        self.down_sumsq += np.minimum(r, 0.0) ** 2
        self.last = equity.copy()
        up = equity >= self.peak
        self.peak = np.where(up, equity, self.peak)
        self.peak_ns = np.where(up, t_ns, self.peak_ns)
        self.max_drawdown = np.maximum(self.max_drawdown, self.peak - equity)
        self.max_drawdown_ns = np.maximum(self.max_drawdown_ns, t_ns - self.peak_ns)
        if self.history is not None:
            self.history.append((t_ns, self.last))

    # ---- the figures ----------------------------------------------------------------------

    def mean(self) -> np.ndarray:
        return self.sum / self.periods if self.periods else np.full(self.columns, math.nan)

    def std(self) -> np.ndarray:
        """Sample standard deviation of the per-period returns (n - 1)."""
        n = self.periods
        if n < 2:
            return np.full(self.columns, math.nan)
        var = (self.sumsq - self.sum * self.sum / n) / (n - 1)
        return np.sqrt(np.maximum(var, 0.0))

    def sharpe(self, periods_per_year: float) -> np.ndarray:
        """mean / std * sqrt(periods per year); NaN where std is 0 or n < 2."""
        std = self.std()
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.mean() / std * math.sqrt(periods_per_year)
        return np.where(std > _TINY * (np.abs(self.mean()) + 1.0), out, math.nan)

    def sortino(self, periods_per_year: float) -> np.ndarray:
        """mean / downside deviation * sqrt(periods per year), where the downside deviation
        is sqrt(sum(min(r, 0)^2) / n); NaN without a losing period or with n < 2."""
        n = self.periods
        if n < 2:
            return np.full(self.columns, math.nan)
        dd = np.sqrt(self.down_sumsq / n)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.mean() / dd * math.sqrt(periods_per_year)
        return np.where(dd > 0, out, math.nan)

    def drawdown_duration_s(self) -> np.ndarray:
        return self.max_drawdown_ns / 1e9

    # ---- persistence ----------------------------------------------------------------------

    _STATE = ("last", "sum", "sumsq", "down_sumsq", "peak", "peak_ns", "max_drawdown",
              "max_drawdown_ns")  # fmt: skip

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.{k}": getattr(self, k) for k in self._STATE}
        out[f"{prefix}.scalars"] = np.array([self.periods, self.t0_ns], np.int64)
        return out

    def load(self, prefix: str, state: dict[str, np.ndarray]) -> None:
        for k in self._STATE:
            value = np.asarray(state[f"{prefix}.{k}"])
            if value.shape != (self.columns,):
                raise ValueError(f"{prefix}.{k}: {value.shape} does not fit {self.columns} columns")
            setattr(self, k, value.copy())
        self.periods, self.t0_ns = (int(x) for x in state[f"{prefix}.scalars"])


# Relative size under which a standard deviation is rounding noise of a constant series.
_TINY = 1e-12

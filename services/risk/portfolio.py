"""Portfolio risk from the gate's own minute closes: each symbol's volatility and sudden moves
(circuit breakers), a rolling correlation matrix (correlated exposure) and value at risk
(parametric and historical). Pure: fed one price per symbol per minute (the close the features'
1m vectors carry), read on the intent path from statistics cached until the next price comes.

Returns are log returns between consecutive observed minutes, scaled to one minute
(r / sqrt(gap)); a step longer than ``max_gap_min`` (a night, a halt) is no return at all, so a
morning keeps yesterday's history without counting the overnight gap as a move.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np  # a base dependency through exchange-calendars; pinned in the constraints

from proto.units import SECOND_NS

MINUTE_NS = 60 * SECOND_NS
MAX_GAP_MIN = 30  # a longer step between two closes (overnight, a halt) is not a return


@dataclass(frozen=True)
class Move:
    """A symbol's move over the last minutes, in its own standard deviations."""

    log_return: float
    minutes: int
    sigma_1m: float

    @property
    def sigmas(self) -> float:
        return abs(self.log_return) / (self.sigma_1m * math.sqrt(self.minutes))


@dataclass(frozen=True)
class Var:
    """Value at risk in account currency (a positive loss), both ways, and the one that binds."""

    parametric: float
    historical: float

    @property
    def value(self) -> float:
        return max(self.parametric, self.historical)


class MinuteCloses:
    """The last ``window`` + 1 minute closes of each symbol, and what they say."""

    def __init__(self, window: int, min_samples: int, max_gap_min: int = MAX_GAP_MIN) -> None:
        self.window, self.min_samples, self.max_gap = window, min_samples, max_gap_min
        self.closes: dict[str, collections.deque[tuple[int, float]]] = {}
        self.version = 0  # moves with each close: cached matrices are rebuilt after it moved
        # Aligned returns per set of symbols, until the next close (intents between two minutes'
        # closes reuse them: each costs ~0.1 ms to build, a decision several).
        self._matrices: dict[tuple[str, ...], np.ndarray] = {}
        self._correlations: dict[tuple[str, str], float | None] = {}
        self._matrices_version = -1

    def resize(self, window: int, min_samples: int) -> None:
        """New limits (a live config change): the closes kept so far stay, up to the new window."""
        self.min_samples = min_samples
        if window != self.window:
            self.window = window
            self.closes = {s: collections.deque(q, maxlen=window + 1) for s, q in self.closes.items()}
            self.version += 1

    def add(self, symbol: str, ts: int, price: float) -> bool:
        """The symbol's close in the minute of ``ts`` (a later one in the same minute replaces
        it). False, and nothing kept: not a usable price, or older than the symbol's last."""
        if not (math.isfinite(price) and price > 0):
            return False
        minute = ts // MINUTE_NS
        series = self.closes.get(symbol)
        if series is None:
            series = self.closes[symbol] = collections.deque(maxlen=self.window + 1)
        if series and minute < series[-1][0]:
            return False
        if series and minute == series[-1][0]:
            series.pop()
        series.append((minute, math.log(price)))
        self.version += 1
        return True

    def _steps(self, symbol: str) -> list[tuple[int, float]]:
        """(minute, one-minute-scaled return) for each step no longer than max_gap."""
        series = self.closes.get(symbol, ())
        out = []
        previous: tuple[int, float] | None = None
        for minute, logp in series:
            if previous is not None and 0 < minute - previous[0] <= self.max_gap:
                out.append((minute, (logp - previous[1]) / math.sqrt(minute - previous[0])))
            previous = (minute, logp)
        return out

    def sigma(self, symbol: str, before_minute: int | None = None) -> float | None:
        """Standard deviation of the symbol's one-minute returns (those ending at or before
        ``before_minute`` when given); None with fewer than min_samples."""
        steps = [r for m, r in self._steps(symbol) if before_minute is None or m <= before_minute]
        if len(steps) < self.min_samples:
            return None
        value = float(np.std(steps, ddof=1))
        return value if value > 0 else None

    def move(self, symbol: str, minutes: int) -> Move | None:
        """The move from the oldest close within the last ``minutes`` (and not across a gap) to
        the latest, against the volatility of the returns before it (a jump inside the window
        does not widen its own yardstick). None: too little history, or no span."""
        series = self.closes.get(symbol)
        if not series:
            return None
        last_minute, last_logp = series[-1]
        start: tuple[int, float] | None = None
        later = last_minute
        for minute, logp in reversed(series):
            if minute < last_minute - minutes or later - minute > self.max_gap:
                break
            start, later = (minute, logp), minute
        if start is None or start[0] == last_minute:
            return None
        sigma = self.sigma(symbol, before_minute=start[0])
        if sigma is None:
            return None
        return Move(last_logp - start[1], last_minute - start[0], sigma)

    def _fresh(self) -> None:
        """Drop what was cached before the latest close."""
        if self._matrices_version != self.version:
            self._matrices.clear()
            self._correlations.clear()
            self._matrices_version = self.version

    def returns_matrix(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Aligned one-minute returns (rows: minutes any of them printed, columns: ``symbols``),
        a symbol without a close in a minute carrying its last; rows where one is unknown, or
        that span a gap, are left out. Cached until the next close."""
        self._fresh()
        cached = self._matrices.get(symbols)
        if cached is not None:
            return cached
        minutes = sorted({m for s in symbols for m, _ in self.closes.get(s, ())})[-(self.window + 1) :]
        grid = np.full((len(minutes), len(symbols)), np.nan)
        index = {m: k for k, m in enumerate(minutes)}
        for col, s in enumerate(symbols):
            for m, logp in self.closes.get(s, ()):
                if m in index:
                    grid[index[m], col] = logp
            # carry each close forward over the minutes this symbol did not print
            column = grid[:, col]
            seen = ~np.isnan(column)
            if seen.any():
                last = np.maximum.accumulate(np.where(seen, np.arange(len(column)), -1))
                filled = np.where(last >= 0, column[np.maximum(last, 0)], np.nan)
                grid[:, col] = filled
        if len(minutes) < 2:
            out = np.empty((0, len(symbols)))
        else:
            gaps = np.diff(np.asarray(minutes, dtype=float))
            rets = np.diff(grid, axis=0) / np.sqrt(gaps)[:, None]
            keep = (gaps <= self.max_gap) & ~np.isnan(rets).any(axis=1)
            out = rets[keep]
        self._matrices[symbols] = out
        return out

    def correlation(self, a: str, b: str) -> float | None:
        """Correlation of two symbols' one-minute returns over their common minutes; None with
        fewer than min_samples common returns or a flat one. Cached until the next close."""
        self._fresh()
        pair = (a, b) if a <= b else (b, a)
        if pair in self._correlations:
            return self._correlations[pair]
        rets = self.returns_matrix(pair)
        rho = None
        if len(rets) >= self.min_samples:
            cov = np.cov(rets, rowvar=False)
            if cov[0, 0] > 0 and cov[1, 1] > 0:
                rho = float(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]))
        self._correlations[pair] = rho
        return rho

    def var(self, notionals: dict[str, float], confidence: float, horizon_minutes: int) -> Var | None:
        """Value at risk of holding ``notionals`` (signed, account currency) for
        ``horizon_minutes``: parametric (normal, from the covariance of the aligned returns) and
        historical (the loss quantile of the window's own return rows), each scaled from one
        minute by the square root of time. None: too few aligned returns for these symbols."""
        held = {s: n for s, n in notionals.items() if n}
        if not held:
            return Var(0.0, 0.0)
        symbols = tuple(sorted(held))
        rets = self.returns_matrix(symbols)
        if len(rets) < self.min_samples:
            return None
        weights = np.asarray([held[s] for s in symbols])
        pnl = rets @ weights  # log returns as simple ones: minutes are small moves
        scale = math.sqrt(horizon_minutes)
        if len(symbols) == 1:
            variance = float(np.var(rets[:, 0], ddof=1)) * weights[0] ** 2
        else:
            variance = float(weights @ np.cov(rets, rowvar=False) @ weights)
        parametric = NormalDist().inv_cdf(confidence) * math.sqrt(max(variance, 0.0)) * scale
        historical = max(-float(np.quantile(pnl, 1.0 - confidence)), 0.0) * scale
        return Var(parametric, historical)

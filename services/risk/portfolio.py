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
        # The aligned returns and the pairs' correlations, until the next close (intents between
        # two closes reuse them; bench/risk.py measures both cases).
        self._built: tuple[dict[str, int], np.ndarray, np.ndarray] | None = None
        self._correlations: dict[tuple[str, str], float | None] = {}
        self._covariances: dict[tuple[str, ...], np.ndarray] = {}
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
            self._built = None
            self._correlations.clear()
            self._covariances.clear()
            self._matrices_version = self.version

    def _grid(self) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
        """Every symbol's one-minute returns on the union of the last ``window`` + 1 minutes any
        symbol printed, each close carried forward over the minutes its symbol did not print:
        (column of each symbol, returns with NaN before a symbol's first close, each column's
        first known row). Steps longer than max_gap are dropped for all. Built once per close,
        with numpy (an entry against 50 held positions asks for 50 pairs of it)."""
        self._fresh()
        if self._built is not None:
            return self._built
        symbols = sorted(self.closes)
        columns = {s: k for k, s in enumerate(symbols)}
        series = [
            (np.fromiter((m for m, _ in q), np.int64), np.fromiter((p for _, p in q), float))
            for q in (self.closes[s] for s in symbols)
        ]
        minutes = np.unique(np.concatenate([m for m, _ in series])) if series else np.zeros(0, np.int64)
        minutes = minutes[-(self.window + 1) :]
        grid = np.full((len(minutes), len(symbols)), np.nan)
        for col, (m, logp) in enumerate(series):
            # the last close at or before each grid minute (none before the symbol's first)
            at = np.searchsorted(m, minutes, side="right") - 1
            grid[:, col] = np.where(at >= 0, logp[np.maximum(at, 0)], np.nan)
        if len(minutes) < 2:
            rets = np.empty((0, len(symbols)))
        else:
            gaps = np.diff(minutes).astype(float)
            rets = (np.diff(grid, axis=0) / np.sqrt(gaps)[:, None])[gaps <= self.max_gap]
        known = ~np.isnan(rets)
        # each column's first known row (none known, or no rows at all: past the end)
        first = (
            np.where(known.any(axis=0), known.argmax(axis=0), len(rets))
            if len(rets)
            else np.zeros(len(symbols), int)
        )
        self._built = (columns, rets, first)
        return self._built

    def returns_matrix(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Aligned one-minute returns of ``symbols`` (columns, in that order) over the rows all of
        them know. Cached until the next close."""
        columns, rets, first = self._grid()
        if any(s not in columns for s in symbols):
            return np.empty((0, len(symbols)))
        cols = [columns[s] for s in symbols]
        start = int(max((first[c] for c in cols), default=0))
        return rets[start:, cols]

    def correlations(self, symbol: str, others: list[str]) -> dict[str, float | None]:
        """``correlation(symbol, other)`` for each of ``others``, computed together: one numpy
        pass per distinct start of the rows known to both (one, once every symbol has history)."""
        self._fresh()
        out: dict[str, float | None] = {}
        todo = []
        for other in others:
            pair = (symbol, other) if symbol <= other else (other, symbol)
            if pair in self._correlations:
                out[other] = self._correlations[pair]
            else:
                todo.append(other)
        columns, rets, first = self._grid()
        if symbol not in columns:
            return {**out, **dict.fromkeys(todo)}
        col = columns[symbol]
        groups: dict[int, list[str]] = collections.defaultdict(list)
        for other in todo:
            if other not in columns:
                out[other] = None
                continue
            groups[int(max(first[col], first[columns[other]]))].append(other)
        for start, names in groups.items():
            x = rets[start:, col]
            y = rets[start:, [columns[n] for n in names]]
            rhos: list[float | None] = [None] * len(names)
            if len(x) >= self.min_samples:
                xc, yc = x - x.mean(), y - y.mean(axis=0)
                sx, sy = np.sqrt((xc**2).sum()), np.sqrt((yc**2).sum(axis=0))
                with np.errstate(divide="ignore", invalid="ignore"):
                    r = (xc @ yc) / (sx * sy)
                rhos = [float(v) if sx > 0 and s_y > 0 else None for v, s_y in zip(r, sy, strict=True)]
            for name, rho in zip(names, rhos, strict=True):
                pair = (symbol, name) if symbol <= name else (name, symbol)
                self._correlations[pair] = out[name] = rho
        return out

    def correlation(self, a: str, b: str) -> float | None:
        """Correlation of two symbols' one-minute returns over the minutes both know; None with
        fewer than min_samples of them or a flat one. Cached until the next close."""
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
        cov = self._covariances.get(symbols)
        if cov is None:
            cov = self._covariances[symbols] = np.atleast_2d(np.cov(rets, rowvar=False))
        variance = float(weights @ cov @ weights)
        parametric = NormalDist().inv_cdf(confidence) * math.sqrt(max(variance, 0.0)) * scale
        historical = max(-float(np.quantile(pnl, 1.0 - confidence)), 0.0) * scale
        return Var(parametric, historical)

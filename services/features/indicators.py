"""Incremental technical indicators: O(1) per bar, each equal to TA-Lib's on the same bars.

TA-Lib recomputes over a window; a live service cannot afford that per update, so these keep
running state instead. Each reproduces TA-Lib's seeding (SMA seed for EMA, Wilder sums for ATR and
ADX, the aligned fast EMA of MACD) so that tests/unit/test_indicators.py can hold them to 1e-9
relative against the ta-lib package on real bars. ``update`` returns NaN until warm-up is done,
on exactly the bar where TA-Lib's output starts.
"""

from __future__ import annotations

import bisect
import collections
import math

NAN = math.nan


def _is_zero(value: float) -> bool:
    # TA-Lib's TA_IS_ZERO: guards divisions the same way so degenerate bars agree too.
    return -1e-8 < value < 1e-8


class Sma:
    __slots__ = ("n", "total", "window")

    def __init__(self, n: int) -> None:
        self.n = n
        self.window: collections.deque[float] = collections.deque()
        self.total = 0.0

    def update(self, x: float) -> float:
        self.window.append(x)
        self.total += x
        if len(self.window) > self.n:
            self.total -= self.window.popleft()
        return self.total / self.n if len(self.window) == self.n else NAN


class Ema:
    """k = 2/(n+1), seeded with the SMA of the first n values (TA-Lib's default)."""

    __slots__ = ("count", "k", "n", "seed_total", "value")

    def __init__(self, n: int) -> None:
        self.n = n
        self.k = 2.0 / (n + 1)
        self.count = 0
        self.seed_total = 0.0
        self.value = NAN

    def update(self, x: float) -> float:
        self.count += 1
        if self.count < self.n:
            self.seed_total += x
            return NAN
        if self.count == self.n:
            self.value = (self.seed_total + x) / self.n
        else:
            self.value = (x - self.value) * self.k + self.value
        return self.value


class Macd:
    """TA-Lib aligns both EMAs on the slow one's first output: the fast EMA is seeded with the SMA
    of the ``fast`` values ending there, not of the first ``fast`` values."""

    __slots__ = ("fast", "history", "k_fast", "signal", "slow", "value_fast")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self.slow = Ema(slow)
        self.fast = fast
        self.k_fast = 2.0 / (fast + 1)
        self.value_fast = NAN
        self.history: collections.deque[float] = collections.deque(maxlen=fast)
        self.signal = Ema(signal)

    def update(self, x: float) -> tuple[float, float, float]:
        slow = self.slow.update(x)
        if math.isnan(slow):
            self.history.append(x)
            return NAN, NAN, NAN
        if math.isnan(self.value_fast):
            self.history.append(x)
            self.value_fast = sum(self.history) / self.fast
        else:
            self.value_fast = (x - self.value_fast) * self.k_fast + self.value_fast
        line = self.value_fast - slow
        signal = self.signal.update(line)
        if math.isnan(signal):
            return NAN, NAN, NAN
        return line, signal, line - signal


class Rsi:
    """Wilder's RSI: simple average of the first n changes, then Wilder smoothing."""

    __slots__ = ("avg_gain", "avg_loss", "count", "n", "prev")

    def __init__(self, n: int = 14) -> None:
        self.n = n
        self.count = 0
        self.prev = NAN
        self.avg_gain = self.avg_loss = 0.0

    def update(self, x: float) -> float:
        prev, self.prev = self.prev, x
        if math.isnan(prev):
            return NAN
        change = x - prev
        gain, loss = (change, 0.0) if change > 0 else (0.0, -change)
        self.count += 1
        n = self.n
        if self.count < n:
            self.avg_gain += gain
            self.avg_loss += loss
            return NAN
        if self.count == n:
            self.avg_gain = (self.avg_gain + gain) / n
            self.avg_loss = (self.avg_loss + loss) / n
        else:
            self.avg_gain = (self.avg_gain * (n - 1) + gain) / n
            self.avg_loss = (self.avg_loss * (n - 1) + loss) / n
        total = self.avg_gain + self.avg_loss
        return 0.0 if _is_zero(total) else 100.0 * self.avg_gain / total


def true_range(high: float, low: float, prev_close: float) -> float:
    return max(high - low, abs(high - prev_close), abs(low - prev_close))


class Atr:
    __slots__ = ("count", "n", "prev_close", "total", "value")

    def __init__(self, n: int = 14) -> None:
        self.n = n
        self.count = 0
        self.prev_close = NAN
        self.total = 0.0
        self.value = NAN

    def update(self, high: float, low: float, close: float) -> float:
        prev, self.prev_close = self.prev_close, close
        if math.isnan(prev):
            return NAN
        tr = true_range(high, low, prev)
        self.count += 1
        if self.count < self.n:
            self.total += tr
            return NAN
        if self.count == self.n:
            self.value = (self.total + tr) / self.n
        else:
            self.value = (self.value * (self.n - 1) + tr) / self.n
        return self.value


class Adx:
    """+DI, -DI and ADX with TA-Lib's Wilder sums: DM and TR are summed over the first n-1 bars,
    then decayed by 1/n; ADX is the mean of the first n DX values, then Wilder-smoothed. Bars whose
    TR sum or DI sum is zero leave the state as TA-Lib does."""

    __slots__ = (
        "adx",
        "count",
        "dx_count",
        "dx_total",
        "minus_di",
        "n",
        "plus_di",
        "prev",
        "sum_minus",
        "sum_plus",
        "sum_tr",
    )

    def __init__(self, n: int = 14) -> None:
        self.n = n
        self.count = 0
        self.prev: tuple[float, float, float] | None = None
        self.sum_plus = self.sum_minus = self.sum_tr = 0.0
        self.plus_di = self.minus_di = self.adx = NAN
        self.dx_count = 0
        self.dx_total = 0.0

    def update(self, high: float, low: float, close: float) -> tuple[float, float, float]:
        prev, self.prev = self.prev, (high, low, close)
        if prev is None:
            return NAN, NAN, NAN
        prev_high, prev_low, prev_close = prev
        up, down = high - prev_high, prev_low - low
        plus_dm = up if up > 0 and up > down else 0.0
        minus_dm = down if down > 0 and down > up else 0.0
        tr = true_range(high, low, prev_close)
        self.count += 1
        n = self.n
        if self.count < n:
            self.sum_plus += plus_dm
            self.sum_minus += minus_dm
            self.sum_tr += tr
            return NAN, NAN, NAN
        self.sum_plus = self.sum_plus - self.sum_plus / n + plus_dm
        self.sum_minus = self.sum_minus - self.sum_minus / n + minus_dm
        self.sum_tr = self.sum_tr - self.sum_tr / n + tr
        if not _is_zero(self.sum_tr):
            self.plus_di = 100.0 * self.sum_plus / self.sum_tr
            self.minus_di = 100.0 * self.sum_minus / self.sum_tr
        else:
            self.plus_di = self.minus_di = 0.0
        self._update_adx()
        return self.plus_di, self.minus_di, self.adx

    def _update_adx(self) -> None:
        n = self.n
        di_sum = self.plus_di + self.minus_di
        valid = not _is_zero(self.sum_tr) and not _is_zero(di_sum)
        dx = 100.0 * abs(self.plus_di - self.minus_di) / di_sum if valid else 0.0
        if self.dx_count < n:
            self.dx_count += 1
            self.dx_total += dx
            if self.dx_count == n:
                self.adx = self.dx_total / n
        elif valid:
            self.adx = (self.adx * (n - 1) + dx) / n


class Roc:
    __slots__ = ("window",)

    def __init__(self, n: int = 10) -> None:
        self.window: collections.deque[float] = collections.deque(maxlen=n + 1)

    def update(self, x: float) -> float:
        self.window.append(x)
        if len(self.window) < self.window.maxlen:  # type: ignore[operator]
            return NAN
        base = self.window[0]
        return 0.0 if base == 0 else (x / base - 1.0) * 100.0


class Bollinger:
    """SMA +- k population standard deviations, as TA-Lib computes its variance (mean of squares
    minus square of the mean over running sums)."""

    __slots__ = ("k", "n", "sum_sq", "sum_x", "window")

    def __init__(self, n: int = 20, k: float = 2.0) -> None:
        self.n, self.k = n, k
        self.window: collections.deque[float] = collections.deque()
        self.sum_x = self.sum_sq = 0.0

    def update(self, x: float) -> tuple[float, float, float]:
        self.window.append(x)
        self.sum_x += x
        self.sum_sq += x * x
        if len(self.window) > self.n:
            old = self.window.popleft()
            self.sum_x -= old
            self.sum_sq -= old * old
        if len(self.window) < self.n:
            return NAN, NAN, NAN
        mean = self.sum_x / self.n
        variance = self.sum_sq / self.n - mean * mean
        std = math.sqrt(variance) if variance > 0 else 0.0
        return mean + self.k * std, mean, mean - self.k * std


class MonotonicWindow:
    """Rolling max or min in amortized O(1) (a monotonic deque of (index, value))."""

    __slots__ = ("entries", "index", "is_max", "n")

    def __init__(self, n: int, is_max: bool) -> None:
        self.n, self.is_max = n, is_max
        self.entries: collections.deque[tuple[int, float]] = collections.deque()
        self.index = 0

    def update(self, x: float) -> float:
        entries = self.entries
        if self.is_max:
            while entries and entries[-1][1] <= x:
                entries.pop()
        else:
            while entries and entries[-1][1] >= x:
                entries.pop()
        entries.append((self.index, x))
        if entries[0][0] <= self.index - self.n:
            entries.popleft()
        self.index += 1
        return entries[0][1]

    @property
    def full(self) -> bool:
        return self.index >= self.n


class Stochastic:
    """TA-Lib STOCH: fast %K over n bars, slow %K = SMA(fast %K), %D = SMA(slow %K)."""

    __slots__ = ("highest", "lowest", "slow_d", "slow_k")

    def __init__(self, n: int = 14, smooth_k: int = 3, smooth_d: int = 3) -> None:
        self.highest = MonotonicWindow(n, is_max=True)
        self.lowest = MonotonicWindow(n, is_max=False)
        self.slow_k = Sma(smooth_k)
        self.slow_d = Sma(smooth_d)

    def update(self, high: float, low: float, close: float) -> tuple[float, float]:
        hh = self.highest.update(high)
        ll = self.lowest.update(low)
        if not self.highest.full:
            return NAN, NAN
        span = hh - ll
        fast_k = 0.0 if span == 0 else 100.0 * (close - ll) / span
        k = self.slow_k.update(fast_k)
        if math.isnan(k):
            return NAN, NAN
        d = self.slow_d.update(k)
        # TA-Lib starts both outputs together, once %D exists.
        return (NAN, NAN) if math.isnan(d) else (k, d)


class SessionVwap:
    """Volume-weighted average price since the session began (reset by the caller each day).
    TA-Lib has no VWAP; its test checks it against a plain cumulative sum over the same trades."""

    __slots__ = ("notional", "volume")

    def __init__(self) -> None:
        self.notional = 0.0
        self.volume = 0.0

    def reset(self) -> None:
        self.notional = self.volume = 0.0

    def add(self, price: float, size: float) -> None:
        self.notional += price * size
        self.volume += size

    @property
    def value(self) -> float:
        return self.notional / self.volume if self.volume > 0 else NAN


class RollingStats:
    """Mean and sample standard deviation over the last n values (Welford-free running sums are
    enough at these magnitudes; used for z-scores, not compared with TA-Lib)."""

    __slots__ = ("n", "sum_sq", "sum_x", "window")

    def __init__(self, n: int) -> None:
        self.n = n
        self.window: collections.deque[float] = collections.deque()
        self.sum_x = self.sum_sq = 0.0

    def zscore_then_add(self, x: float, min_count: int = 5) -> float:
        """The z-score of x against the values before it (no look-ahead), then x joins them."""
        count = len(self.window)
        z = NAN
        if count >= min_count:
            mean = self.sum_x / count
            var = (self.sum_sq - count * mean * mean) / (count - 1)
            z = (x - mean) / math.sqrt(var) if var > 1e-12 else 0.0
        self.window.append(x)
        self.sum_x += x
        self.sum_sq += x * x
        if len(self.window) > self.n:
            old = self.window.popleft()
            self.sum_x -= old
            self.sum_sq -= old * old
        return z


class PercentileRank:
    """Fraction of the last n values below x, once per bar close. The window is also kept
    sorted: the rank is a bisection instead of a pass over the window (on the decision path)."""

    __slots__ = ("ordered", "window")

    def __init__(self, n: int) -> None:
        self.window: collections.deque[float] = collections.deque(maxlen=n)
        self.ordered: list[float] = []

    def rank_then_add(self, x: float, min_count: int = 10) -> float:
        if math.isnan(x):
            return NAN
        window, ordered = self.window, self.ordered
        rank = bisect.bisect_left(ordered, x) / len(window) if len(window) >= min_count else NAN
        if len(window) == window.maxlen:  # the oldest leaves with this append
            del ordered[bisect.bisect_left(ordered, window[0])]
        window.append(x)
        bisect.insort(ordered, x)
        return rank

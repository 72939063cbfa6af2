"""Clocks. Service cores never read the wall clock: a Clock is passed in."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int: ...


class LiveClock:
    """Wall clock, integer nanoseconds UTC."""

    def now_ns(self) -> int:
        return time.time_ns()


class SimClock:
    """Simulated clock for backtests and tests: moves only when told, and never backwards."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def set(self, ts_ns: int) -> None:
        if ts_ns > self._now:  # noqa: PLR1730 - max() costs a call, and a replay sets this per record
            self._now = ts_ns

    def advance(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError("a clock does not go backwards")
        self._now += delta_ns

"""Synthetic market data for load: N symbols, a geometric random walk mid with a spread of a few
ticks, quotes and trades in the proportions of a real tape (about 1 trade per 4 quote changes)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from libs.common.calendar import MarketCalendar

TICK = 0.01


class SyntheticFeed:
    name = "synthetic"

    def __init__(
        self,
        symbols: int,
        rate: float,
        start_ns: int,
        seed: int = 7,
        count: int | None = None,
        duration_s: float | None = None,
        daily_vol: float = 0.02,
    ) -> None:
        self.symbols = [f"SYN{i:04d}" for i in range(symbols)]
        self.rate = rate
        self.start_ns = start_ns
        self.count = count
        self.duration_ns = int(duration_s * 1e9) if duration_s else None
        self.rng = random.Random(seed)
        # Per-event volatility so that a 6.5 h session at this rate has the requested daily vol.
        events_per_symbol_day = max(rate / symbols * 23_400, 1.0)
        self.step_sigma = daily_vol / math.sqrt(events_per_symbol_day)
        self.mids = [self.rng.uniform(20, 400) for _ in self.symbols]

    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int] | None:
        return None

    def records(self) -> Iterator[tuple[Any, ...]]:
        rng = self.rng
        gap_ns = 1e9 / self.rate
        i = 0
        while True:
            if self.count is not None and i >= self.count:
                return
            ts = self.start_ns + int(i * gap_ns)
            if self.duration_ns is not None and ts - self.start_ns >= self.duration_ns:
                return
            k = rng.randrange(len(self.symbols))
            mid = self.mids[k] * math.exp(rng.gauss(0.0, self.step_sigma))
            self.mids[k] = mid
            half = TICK * rng.choice((1, 1, 1, 2, 3)) / 2
            bid = round(math.floor((mid - half) / TICK) * TICK, 2)
            ask = round(max(bid + TICK, math.ceil((mid + half) / TICK) * TICK), 2)
            sym = self.symbols[k]
            if rng.random() < 0.2:
                buy = rng.random() < 0.5
                yield (
                    "T",
                    ts,
                    sym,
                    ask if buy else bid,
                    100 * rng.randint(1, 5),
                    "SYN",
                    0,
                    False,
                    1 if buy else -1,
                )
            else:
                yield (
                    "Q",
                    ts,
                    sym,
                    bid,
                    100 * rng.randint(1, 20),
                    ask,
                    100 * rng.randint(1, 20),
                    "SYN",
                    False,
                )
            i += 1

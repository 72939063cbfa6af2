"""Replay of QuantConnect LEAN equity data: zipped tick trades and quotes, second/minute bars.

Format (see shared/data/market/lean/equity/readme.md): CSV without header inside one-file zips,
prices in deci-cents (dollars x 10,000), time in milliseconds after midnight New York time.
  tick quote: time,bid,bid_size,ask,ask_size,exchange,condition,suspicious (one side per row)
  tick trade: time,price,size,exchange,condition(hex flags),suspicious
  bars      : time,open,high,low,close,volume
"""

from __future__ import annotations

import heapq
import io
import operator
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from libs.common.calendar import MarketCalendar, market_calendar
from libs.common.markettime import ny_midnight_ns

# Prices are integers in units of 1/10,000 dollar. Divide (correctly rounded: 1821000 -> 182.1);
# multiplying by 0.0001 gives 182.10000000000002, and prices must compare exactly.
PRICE_DIVISOR = 10_000
BAR_SPANS_NS = {"second": 1_000_000_000, "minute": 60_000_000_000}
BAR_NAMES = {"second": "1s", "minute": "1m"}


class LeanDataMissing(FileNotFoundError):
    pass


def _lines(path: Path) -> Iterator[str]:
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(".csv")]
        if len(names) != 1:
            raise ValueError(f"{path}: expected one CSV inside, found {names}")
        with zf.open(names[0]) as raw:
            yield from io.TextIOWrapper(raw, encoding="ascii", newline="")


def quote_records(path: Path, symbol: str, day_ns: int) -> Iterator[tuple[Any, ...]]:
    for line in _lines(path):
        f = line.split(",")
        # float() on the time keeps LEAN's fractional milliseconds; prices are exact integers.
        yield (
            "Q",
            day_ns + int(float(f[0]) * 1e6),
            symbol,
            int(f[1]) / PRICE_DIVISOR,
            int(f[2]),
            int(f[3]) / PRICE_DIVISOR,
            int(f[4]),
            f[5],
            f[7].strip() not in ("0", ""),
        )


def trade_records(path: Path, symbol: str, day_ns: int) -> Iterator[tuple[Any, ...]]:
    for line in _lines(path):
        f = line.split(",")
        yield (
            "T",
            day_ns + int(float(f[0]) * 1e6),
            symbol,
            int(f[1]) / PRICE_DIVISOR,
            int(f[2]),
            f[3],
            int(f[4], 16) if f[4] else 0,
            f[5].strip() not in ("0", ""),
            0,
        )


def bar_records(path: Path, symbol: str, day_ns: int, resolution: str) -> Iterator[tuple[Any, ...]]:
    span = BAR_SPANS_NS[resolution]
    name = BAR_NAMES[resolution]
    for line in _lines(path):
        f = line.split(",")
        yield (
            "B",
            day_ns + int(float(f[0]) * 1e6) + span,
            symbol,
            name,
            int(f[1]) / PRICE_DIVISOR,
            int(f[2]) / PRICE_DIVISOR,
            int(f[3]) / PRICE_DIVISOR,
            int(f[4]) / PRICE_DIVISOR,
            int(f[5]),
        )


class LeanReplay:
    name = "lean-replay"

    def __init__(
        self, root: Path, date: str, symbols: list[str], bars: str = "minute", limit: int | None = None
    ) -> None:
        self.root = Path(root)
        self.date = date
        self.symbols = [s.upper() for s in symbols]
        self.bars = bars
        self.limit = limit
        self.day_ns = ny_midnight_ns(date)
        self.sources = self._find_sources()

    def _find_sources(self) -> list[tuple[str, str, Path]]:
        base = self.root / "equity" / "usa"
        found: list[tuple[str, str, Path]] = []
        missing = []
        for sym in self.symbols:
            low = sym.lower()
            per_symbol = []
            for kind in ("quote", "trade"):
                path = base / "tick" / low / f"{self.date}_{kind}.zip"
                if path.exists():
                    per_symbol.append((kind, sym, path))
            if self.bars in BAR_SPANS_NS:
                bar = base / self.bars / low / f"{self.date}_trade.zip"
                if bar.exists():
                    per_symbol.append((self.bars, sym, bar))
            if not any(k in ("quote", "trade") for k, _, _ in per_symbol):
                missing.append(f"{base}/tick/{low}/{self.date}_{{quote,trade}}.zip")
            found += per_symbol
        if missing:
            raise LeanDataMissing("no LEAN tick data for: " + ", ".join(missing))
        return found

    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int] | None:
        found = (calendar or market_calendar()).session_on(self.date)
        return None if found is None else (found.open_ns, found.close_ns)

    def records(self) -> Iterator[tuple[Any, ...]]:
        streams = []
        for kind, sym, path in self.sources:
            if kind == "quote":
                streams.append(quote_records(path, sym, self.day_ns))
            elif kind == "trade":
                streams.append(trade_records(path, sym, self.day_ns))
            else:
                streams.append(bar_records(path, sym, self.day_ns, kind))
        # heapq.merge is stable: at equal timestamps, earlier sources (quotes before trades) go first.
        merged = heapq.merge(*streams, key=operator.itemgetter(1))
        for i, rec in enumerate(merged):
            if self.limit is not None and i >= self.limit:
                return
            yield rec

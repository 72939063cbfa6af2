"""Replay of LOBSTER NASDAQ order-book samples, level 1 and level N.

Message file: time(s after midnight),type,order_id,size,price,direction (prices x 10,000).
Order-book file: ask1,asksize1,bid1,bidsize1,...; dummy prices (9999999999 / -9999999999) mark an
empty level. Types 4 and 5 are executions; their direction is that of the resting order, so the
aggressor is exact: a resting buy (1) was hit by a seller (-1).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from libs.common.calendar import MarketCalendar
from libs.common.markettime import ny_midnight_ns

# Prices are integers in units of 1/10,000 dollar. Divide (correctly rounded: 1821000 -> 182.1);
# multiplying by 0.0001 gives 182.10000000000002, and prices must compare exactly.
PRICE_DIVISOR = 10_000
EMPTY_ASK = 9_999_999_999
EMPTY_BID = -9_999_999_999
VENUE = "NASDAQ"


def _split(line: str) -> list[str]:
    return line.strip().split(";" if ";" in line else ",")


class LobsterReplay:
    name = "lobster-replay"

    def __init__(
        self, root: Path, date: str, symbols: list[str], level: int = 1, limit: int | None = None
    ) -> None:
        self.root = Path(root)
        self.date = date
        self.level = level
        self.limit = limit
        self.day_ns = ny_midnight_ns(date)
        iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
        self.pairs: list[tuple[str, Path, Path]] = []
        for sym in symbols:
            pattern = re.compile(rf"{re.escape(sym.upper())}_{iso}_\d+_\d+_message_(\d+)(_.*)?\.csv$")
            messages = sorted(p for p in self.root.glob("*.csv") if pattern.match(p.name))
            if not messages:
                raise FileNotFoundError(f"no LOBSTER message file for {sym} on {iso} in {self.root}")
            message = messages[0]
            book = message.with_name(message.name.replace("_message_", "_orderbook_"))
            if not book.exists():
                raise FileNotFoundError(f"LOBSTER order-book file missing: {book}")
            self.pairs.append((sym.upper(), message, book))

    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int] | None:
        return None  # LOBSTER files cover 09:30-16:00 only

    def records(self) -> Iterator[tuple[Any, ...]]:
        import heapq
        import operator

        merged = heapq.merge(*(self._symbol_records(*p) for p in self.pairs), key=operator.itemgetter(1))
        for i, rec in enumerate(merged):
            if self.limit is not None and i >= self.limit:
                return
            yield rec

    def _symbol_records(self, symbol: str, message_path: Path, book_path: Path) -> Iterator[tuple[Any, ...]]:
        previous: list[int] | None = None
        with message_path.open() as messages, book_path.open() as books:
            for msg_line, book_line in zip(messages, books, strict=False):
                m = _split(msg_line)
                book = [int(x) for x in _split(book_line)]
                ts = self.day_ns + int(float(m[0]) * 1e9)
                kind = int(m[1])
                if kind in (4, 5):
                    direction = int(m[5])
                    yield ("T", ts, symbol, int(m[4]) / PRICE_DIVISOR, int(m[3]), VENUE, 0, False, -direction)
                ask, ask_size, bid, bid_size = book[0:4]
                yield (
                    "Q",
                    ts,
                    symbol,
                    0.0 if bid == EMPTY_BID else bid / PRICE_DIVISOR,
                    bid_size,
                    0.0 if ask == EMPTY_ASK else ask / PRICE_DIVISOR,
                    ask_size,
                    VENUE,
                    False,
                )
                if self.level > 1:
                    yield from self._depth(ts, symbol, previous, book)
                previous = book

    def _depth(
        self, ts: int, symbol: str, previous: list[int] | None, book: list[int]
    ) -> Iterator[tuple[Any, ...]]:
        levels = min(self.level, len(book) // 4)
        for lvl in range(levels):
            for side, offset in (("ASK", 0), ("BID", 2)):
                price, size = book[4 * lvl + offset], book[4 * lvl + offset + 1]
                if previous is not None and previous[4 * lvl + offset : 4 * lvl + offset + 2] == [
                    price,
                    size,
                ]:
                    continue
                if price in (EMPTY_ASK, EMPTY_BID):
                    yield ("D", ts, symbol, side, lvl, "DELETE", 0.0, 0)
                else:
                    yield ("D", ts, symbol, side, lvl, "UPDATE", price / PRICE_DIVISOR, size)

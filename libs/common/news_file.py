"""News files for replays and backtests: CSV or JSON lines with a time per headline (shared by the
md-gateway, the webhook's time parsing and, later, the backtest).

Columns / keys (the first present wins):
- time: ``ts``, ``time``, ``timestamp``, ``date``, ``datetime``, ``published``. ISO 8601 with or
  without an offset (without: New York time, the market's), or epoch seconds / ms / us / ns.
- text: ``headline``, ``title``, ``text``.
- tickers: ``symbols``, ``symbol``, ``stock``, ``ticker``, ``tickers`` (a list, or "A,B" / "A B").
- optional: ``id``, ``source``, ``url``, ``body``.

Records come out in time order as ("N", ts_ns, symbol, source, news_id, headline): the shape the
IB provider gives the md-gateway, one record per story (its first ticker; the sentiment service
tags the rest from the text). A row with no parsable time or an empty headline is counted by
reason and skipped, never guessed.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from proto.news import NewsItem

NY = ZoneInfo("America/New_York")
TIME_KEYS = ("ts", "time", "timestamp", "date", "datetime", "published")
TEXT_KEYS = ("headline", "title", "text")
TICKER_KEYS = ("symbols", "symbol", "stock", "ticker", "tickers")


class NewsFile:
    def __init__(self, path: Path, start_ns: int | None = None, end_ns: int | None = None) -> None:
        self.path = Path(path)
        self.start_ns, self.end_ns = start_ns, end_ns
        self.skipped: collections.Counter[str] = collections.Counter()
        if not self.path.exists():
            raise FileNotFoundError(f"news file {self.path} does not exist")

    def records(self) -> list[tuple[Any, ...]]:
        """Every usable row, in time order (a file need not be sorted; IB's and vendors' are not)."""
        out = []
        for row in self._rows():
            rec = self._record(row)
            if rec is not None:
                out.append(rec)
        out.sort(key=lambda r: r[1])
        return out

    def _rows(self) -> Iterator[dict[str, Any]]:
        if self.path.suffix in (".jsonl", ".ndjson", ".json"):
            with self.path.open() as f:
                for line in f:
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        self.skipped["bad_json"] += 1
                        continue
                    if isinstance(row, dict):
                        yield row
                    else:
                        self.skipped["not_an_object"] += 1
        else:
            with self.path.open(newline="") as f:
                yield from csv.DictReader(f)

    def _record(self, row: dict[str, Any]) -> tuple[Any, ...] | None:
        headline = " ".join(str(_first(row, TEXT_KEYS) or "").split())
        if not headline:
            self.skipped["empty_headline"] += 1
            return None
        ts = parse_time(_first(row, TIME_KEYS))
        if ts is None:
            self.skipped["bad_time"] += 1
            return None
        early = self.start_ns is not None and ts < self.start_ns
        if early or (self.end_ns is not None and ts >= self.end_ns):
            self.skipped["outside_replay"] += 1
            return None
        tickers = _tickers(_first(row, TICKER_KEYS))
        source = str(row.get("source") or "file")
        given = row.get("id")
        digest = hashlib.blake2b(f"{ts}|{headline}".encode(), digest_size=10).hexdigest()
        news_id = f"{source}:{given}" if given not in (None, "") else f"file:{digest}"
        return ("N", ts, tickers[0] if tickers else "", source, news_id, headline)


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for k in keys:
        if row.get(k) not in (None, ""):
            return row[k]
    return None


def _tickers(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).replace(",", " ").split()
    return [str(x).strip().upper().lstrip("$") for x in items if str(x).strip()]


def parse_time(value: Any) -> int | None:
    """Epoch ns from ISO 8601 (naive means New York) or an epoch number in s, ms, us or ns."""
    if value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        n = float(value)
        for scale in (1e9, 1e6, 1e3, 1.0):  # s, ms, us, ns: the one that lands in 1990..2100
            if 6.3e17 <= n * scale < 4.1e18:
                return int(n * scale)
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=NY)
    return int(moment.timestamp() * 1_000_000) * 1_000


def news_item(record: tuple[Any, ...], ts_init: int) -> NewsItem:
    """A headline record (``("N", ts, symbol, source, news_id, headline)``, from a file or IB) as
    the event published on news.raw."""
    _, ts, symbol, source, news_id, headline = record
    return NewsItem(
        ts_event=ts,
        ts_init=ts_init,
        news_id=news_id,
        source=source,
        headline=headline,
        symbols=[symbol] if symbol else [],
    )

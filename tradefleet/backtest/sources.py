"""Where a backtest's market data comes from: LEAN files (the replay's own reader) or the
quotes and trades tables the fleet recorded or backfilled (TimescaleDB, or PostgreSQL's native
partitions). Both give the md-gateway core's record tuples in time order, one trading day at a time,
with that day's headlines merged in by time like the replay does."""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.common.calendar import MarketCalendar, market_calendar
from libs.common.markettime import ny_midnight_ns
from libs.common.news_file import NewsFile
from proto.base import Event
from proto.units import DAY_NS
from services.md_gateway.providers.lean import LeanReplay

Record = tuple[Any, ...]
DB_SCHEMES = ("postgresql://", "postgres://")


def parse_day(text: str) -> str:
    """YYYYMMDD or YYYY-MM-DD -> YYYYMMDD (a clear error otherwise)."""
    cleaned = text.replace("-", "")
    try:
        dt.datetime.strptime(cleaned, "%Y%m%d")
    except ValueError:
        raise ValueError(f"not a date: {text!r} (expected YYYY-MM-DD or YYYYMMDD)") from None
    return cleaned


def weekdays(start: str, end: str) -> list[str]:
    first = dt.datetime.strptime(parse_day(start), "%Y%m%d").date()
    last = dt.datetime.strptime(parse_day(end), "%Y%m%d").date()
    if last < first:
        raise ValueError(f"--end {end} is before --start {start}")
    days = []
    while first <= last:
        if first.weekday() < 5:
            days.append(first.strftime("%Y%m%d"))
        first += dt.timedelta(days=1)
    return days


@dataclass(frozen=True)
class DaySource:
    """One trading day of records for some symbols."""

    date: str
    symbols: tuple[str, ...]
    origin: str  # "lean" or "db"
    root: str  # the LEAN folder or the database URL

    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int] | None:
        """The day's regular session by the market calendar (None: the market did not open)."""
        found = (calendar or market_calendar()).session_on(self.date)
        return None if found is None else (found.open_ns, found.close_ns)

    def session_start_ns(self, calendar: MarketCalendar | None = None) -> int:
        session = self.session(calendar)
        return session[0] if session else ny_midnight_ns(self.date)

    def records(self) -> Iterator[Record]:
        if self.origin == "lean":
            return LeanReplay(Path(self.root), self.date, list(self.symbols), "none").records()
        return _db_records(self.root, self.date, self.symbols)


def is_database(data: str) -> bool:
    return data.startswith(DB_SCHEMES)


def find_days(data: str, symbols: list[str], start: str, end: str) -> list[DaySource]:
    """The days in [start, end] with data for at least one symbol; a symbol missing on a day is
    left out of that day (said in the report), never invented."""
    wanted = weekdays(start, end)
    if is_database(data):
        return _db_days(data, symbols, wanted)
    base = Path(data) / "equity" / "usa" / "tick"
    if not base.exists():
        raise FileNotFoundError(f"{data}: no LEAN tick folder at {base}")
    days = []
    for date in wanted:
        have = tuple(s for s in symbols if (base / s.lower() / f"{date}_trade.zip").exists())
        if have:
            days.append(DaySource(date, have, "lean", data))
    return days


def day_news(news: list[Path], date: str) -> list[Record]:
    """The headlines of that day from each news file, in time order."""
    start = ny_midnight_ns(date)
    found: list[Record] = []
    for path in news:
        found += NewsFile(path, start, start + DAY_NS).records()
    found.sort(key=lambda r: r[1])
    return found


def with_news(records: Iterator[Record], news: list[Path], date: str) -> Iterator[Record]:
    """The day's records with the headlines of that day from each news file merged in by time."""
    found = day_news(news, date)
    return merge_few(records, found) if found else records


def merge_few(records: Iterator[Record], few: list[Record]) -> Iterator[Record]:
    """``heapq.merge(records, few, key=time)`` for a short list ``few`` (a day's headlines beside
    its ticks): the same order (at equal times the record first), without a key call and a heap
    step per record. Any tuples with their time at [1] merge this way."""
    pending = iter(few)
    head = next(pending, None)
    for rec in records:
        while head is not None and head[1] < rec[1]:
            yield head
            head = next(pending, None)
        yield rec
    if head is not None:
        yield head
        yield from pending


@dataclass(frozen=True, eq=False)
class CleanedDay(DaySource):
    """A day the md-gateway core has already cleaned, its events in hand: the backtest replays
    them as they are instead of cleaning the records again (tradefleet.backtest.engine.clean_day
    makes one). Cleaning costs about a microsecond a record, a third of what the EMA cross's
    backtest spends per tick; a day replayed more than once (the ablation's variants, a sweep of
    settings, bench/backtest_peers.py's rounds) pays it once. Headlines are not part of it: each
    run merges its own in by time, as with records.

    ``events``: ("E", record time, subject, event) in replay order; ``cleaning``: the settings it
    was cleaned under (a run under others refuses it); ``plausible``: the core's bounds on a
    record's time, which a run's headlines are held to as well."""

    events: tuple[tuple[str, int, str, Event], ...] = field(repr=False)
    record_count: int
    stats: Mapping[str, int]
    bad: Mapping[str, int]
    cleaning: str
    plausible: tuple[int, int]


def recorded_days(data: str, symbols: list[str]) -> list[str]:
    """Every day (YYYYMMDD, in order) with data for at least one of ``symbols``: the recorded
    trades of a database, or a LEAN folder's tick files."""
    if is_database(data):
        import psycopg

        with psycopg.connect(data) as conn:
            rows = conn.execute(
                "SELECT DISTINCT (ts AT TIME ZONE 'America/New_York')::date FROM trades "
                "WHERE symbol = ANY(%s) ORDER BY 1",
                (symbols,),
            ).fetchall()
        return [r[0].strftime("%Y%m%d") for r in rows]
    base = Path(data) / "equity" / "usa" / "tick"
    found = {p.name[:8] for s in symbols for p in (base / s.lower()).glob("*_trade.zip")}
    return sorted(found)


def _db_days(url: str, symbols: list[str], wanted: list[str]) -> list[DaySource]:
    import psycopg

    start, end = ny_midnight_ns(wanted[0]), ny_midnight_ns(wanted[-1]) + DAY_NS
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT DISTINCT symbol, (ts AT TIME ZONE 'America/New_York')::date FROM trades "
            "WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s) AND symbol = ANY(%s)",
            (start / 1e9, end / 1e9, symbols),
        ).fetchall()
    by_day: dict[str, list[str]] = {}
    for symbol, day in rows:
        by_day.setdefault(day.strftime("%Y%m%d"), []).append(symbol)
    return [
        DaySource(d, tuple(s for s in symbols if s in by_day[d]), "db", url) for d in wanted if d in by_day
    ]


def _db_records(url: str, date: str, symbols: tuple[str, ...]) -> Iterator[Record]:
    """The day's recorded quotes and trades as the core's records, in the order they were
    recorded: by time, ties by when the gateway made them (``ts_init``), which keeps a burst of
    quotes within one microsecond in its order. Recorded quotes are whole books (both sides),
    which the core takes as they are. Timestamps come back in microseconds (PostgreSQL's)."""
    import psycopg

    start, end = ny_midnight_ns(date), ny_midnight_ns(date) + DAY_NS
    window = (start / 1e9, end / 1e9, list(symbols))
    us = "(extract(epoch FROM {col}) * 1000000)::int8 * 1000"
    times = f"{us.format(col='ts')}, {us.format(col='ts_init')}"
    where = "WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s) AND symbol = ANY(%s) ORDER BY ts, ts_init"
    with psycopg.connect(url) as conn:
        quotes = conn.execute(
            f"SELECT {times}, symbol, bid, bid_size, ask, ask_size, coalesce(venue, '') FROM quotes {where}",
            window,
        ).fetchall()
        trades = conn.execute(
            f"SELECT {times}, symbol, price, size, coalesce(venue, ''), "
            f"coalesce(conditions, 0), coalesce(aggressor, 0) FROM trades {where}",
            window,
        ).fetchall()
    q = (
        (r[0], r[1], ("Q", r[0], r[2], r[3] or 0.0, r[4] or 0, r[5] or 0.0, r[6] or 0, r[7], False))
        for r in quotes
    )
    t = ((r[0], r[1], ("T", r[0], r[2], r[3], r[4], r[5], r[6], False, r[7])) for r in trades)
    return (rec for _, _, rec in heapq.merge(q, t, key=lambda x: (x[0], x[1])))

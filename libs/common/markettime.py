"""Exchange-local time: US equity sessions are defined in New York time, DST included."""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

from proto.units import SECOND_NS as NS

NEW_YORK = ZoneInfo("America/New_York")


def ny_midnight_ns(date_yyyymmdd: str) -> int:
    """Unix ns of midnight New York time on that date (DST-correct for that day)."""
    day = dt.datetime.strptime(date_yyyymmdd, "%Y%m%d").replace(tzinfo=NEW_YORK)
    return int(day.timestamp()) * NS


def ny_time_ns(date_yyyymmdd: str, hh_mm: str) -> int:
    """Unix ns of a New York wall time (HH:MM) on that date."""
    hours, minutes = (int(x) for x in hh_mm.split(":"))
    day = dt.datetime.strptime(date_yyyymmdd, "%Y%m%d").replace(hour=hours, minute=minutes, tzinfo=NEW_YORK)
    return int(day.timestamp()) * NS


def ny_datetime(ts_ns: int) -> dt.datetime:
    """The New York wall time of a Unix ns timestamp (what every time shown to a person is)."""
    return dt.datetime.fromtimestamp(ts_ns / NS, tz=NEW_YORK)


def ny_text(ts_ns: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return ny_datetime(ts_ns).strftime(fmt)


def ny_day_of(ts_ns: int) -> tuple[int, int]:
    """(midnight, next midnight) in Unix ns of the New York day holding ts_ns."""
    local = dt.datetime.fromtimestamp(ts_ns / NS, tz=NEW_YORK)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = (start + dt.timedelta(days=1, hours=3)).replace(hour=0)  # DST-safe
    return int(start.timestamp()) * NS, int(following.timestamp()) * NS


@functools.lru_cache(maxsize=4096)
def _minute_facts(minute_index: int) -> tuple[int, int, int]:
    local = dt.datetime.fromtimestamp(minute_index * 60, tz=NEW_YORK)
    return local.date().toordinal(), local.hour * 60 + local.minute, local.weekday()


def ny_minute_facts(ts_ns: int) -> tuple[int, int, int]:
    """(New York day ordinal, minute of the day, weekday) of a moment. Cached per minute: the
    risk gate asks for every intent and the exits for every price, and a timezone conversion
    costs microseconds."""
    return _minute_facts(ts_ns // (60 * NS))


def ny_day_ordinal(ts_ns: int) -> int:
    return ny_minute_facts(ts_ns)[0]


def parse_duration_ns(text: str) -> int:
    """'1s', '5m', '1h' -> ns. Timeframes and horizons are written this way in config."""
    units = {"s": NS, "m": 60 * NS, "h": 3600 * NS}
    unit = text[-1:]
    if unit not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"not a duration like 30s, 5m or 1h: {text!r}")
    return int(text[:-1]) * units[unit]

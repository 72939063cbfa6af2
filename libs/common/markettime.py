"""Exchange-local time: US equity sessions are defined in New York time, DST included."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
NS = 1_000_000_000


def ny_midnight_ns(date_yyyymmdd: str) -> int:
    """Unix ns of midnight New York time on that date (DST-correct for that day)."""
    day = dt.datetime.strptime(date_yyyymmdd, "%Y%m%d").replace(tzinfo=NEW_YORK)
    return int(day.timestamp()) * NS


def regular_session(date_yyyymmdd: str) -> tuple[int, int]:
    base = ny_midnight_ns(date_yyyymmdd)
    return base + (9 * 3600 + 1800) * NS, base + 16 * 3600 * NS


def ny_day_of(ts_ns: int) -> tuple[int, int]:
    """(midnight, next midnight) in Unix ns of the New York day holding ts_ns."""
    local = dt.datetime.fromtimestamp(ts_ns / NS, tz=NEW_YORK)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    following = (start + dt.timedelta(days=1, hours=3)).replace(hour=0)  # DST-safe
    return int(start.timestamp()) * NS, int(following.timestamp()) * NS


def parse_duration_ns(text: str) -> int:
    """'1s', '5m', '1h' -> ns. Timeframes and horizons are written this way in config."""
    units = {"s": NS, "m": 60 * NS, "h": 3600 * NS}
    unit = text[-1:]
    if unit not in units or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise ValueError(f"not a duration like 30s, 5m or 1h: {text!r}")
    return int(text[:-1]) * units[unit]

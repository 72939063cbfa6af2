"""New York local times of recorded data -> integer ns UTC."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")


def ny_midnight_ns(date_yyyymmdd: str) -> int:
    """Unix ns of midnight New York time on that date (DST-correct for that day)."""
    day = dt.datetime.strptime(date_yyyymmdd, "%Y%m%d").replace(tzinfo=NEW_YORK)
    return int(day.timestamp()) * 1_000_000_000


def regular_session(date_yyyymmdd: str) -> tuple[int, int]:
    base = ny_midnight_ns(date_yyyymmdd)
    return base + (9 * 3600 + 1800) * 1_000_000_000, base + 16 * 3600 * 1_000_000_000

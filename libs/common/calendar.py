"""The exchange's trading calendar: which days trade, and when each session opens and closes.

Every session rule reads this one object, built from the ``market`` settings: the risk gate's
trading window, the features' bar grid (anchored at the open, the close always a boundary), the
protective exits' flatten before the close, and which records a replay or a backtest keeps.

Holidays, early closes and late opens come from exchange-calendars (a maintained library that
tracks each exchange's rule changes). The configured hours bound every session: on an ordinary day
the session is ``session_start``-``session_end``; on an early close it ends at the exchange's close
if that is earlier (2013-11-29: 13:00), on a late open it starts at the exchange's open if later.

Lookups are a dict per New York day, so the hot paths (every intent, every price the exits see)
pay nothing for the library. Building the schedule imports pandas and exchange-calendars (about a
second), which every service process would pay at start-up; the schedule is therefore kept in a
small JSON file per calendar and library version, written once and read by every process after.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

from libs.common.config import MarketSettings
from libs.common.markettime import NEW_YORK, ny_day_ordinal, ny_time_ns
from proto.units import SECOND_NS

WEEKDAYS = "weekdays"  # no exchange: every weekday trades, with the configured hours
# The schedule starts here (older data is rare; a day outside the schedule trades on weekdays).
SCHEDULE_START = "2000-01-01"
# A cached schedule is rebuilt once it reaches fewer than this many days into the future (the
# library publishes holidays about a year ahead).
MIN_DAYS_AHEAD = 180


class Session(NamedTuple):
    open_ns: int
    close_ns: int
    early_close: bool = False


@dataclass(frozen=True)
class ExchangeDay:
    """What the exchange says of one session, before the configured hours bound it."""

    open_ns: int
    close_ns: int
    late_open: bool
    early_close: bool


class CalendarUnavailable(ValueError):
    pass


class MarketCalendar:
    """Sessions by New York day (pure: no I/O after it is built)."""

    def __init__(
        self,
        name: str,
        session_start: str,
        session_end: str,
        days: dict[int, ExchangeDay] | None,
        first_day: int = 0,
        last_day: int = 0,
    ) -> None:
        self.name = name
        self.session_start, self.session_end = session_start, session_end
        self._days = days
        self.first_day, self.last_day = first_day, last_day
        self._sessions: dict[int, Session | None] = {}
        #: lookups of days outside the exchange's schedule (answered by the weekday rule)
        self.outside_schedule = 0

    # -- lookups ------------------------------------------------------------------------------
    def session(self, day: int) -> Session | None:
        """The session of a New York day (a date ordinal), or None when the market is closed."""
        try:
            return self._sessions[day]
        except KeyError:
            found = self._sessions[day] = self._build(day)
            return found

    def session_on(self, yyyymmdd: str) -> Session | None:
        return self.session(dt.datetime.strptime(yyyymmdd, "%Y%m%d").date().toordinal())

    def session_at(self, ts_ns: int) -> Session | None:
        """The session of the New York day holding ``ts_ns`` (whether or not it is open then)."""
        return self.session(ny_day_ordinal(ts_ns))

    def is_open(self, ts_ns: int) -> bool:
        s = self.session(ny_day_ordinal(ts_ns))
        return s is not None and s.open_ns <= ts_ns < s.close_ns

    def hours(self, day: int) -> Session:
        """The day's session, or the configured hours on a day without one (the bar grid of a
        weekend's synthetic data still sits on the usual grid)."""
        return self.session(day) or self._configured(day)

    def trading_days(self, first: str, last: str) -> list[str]:
        """YYYYMMDD of every session from ``first`` to ``last`` inclusive."""
        start = dt.datetime.strptime(first, "%Y%m%d").date().toordinal()
        end = dt.datetime.strptime(last, "%Y%m%d").date().toordinal()
        return [dt.date.fromordinal(d).strftime("%Y%m%d") for d in range(start, end + 1) if self.session(d)]

    def window(self, day: int) -> str:
        """The day's session as HH:MM-HH:MM New York time ("closed" on a day without one)."""
        s = self.session(day)
        if s is None:
            return "closed"
        return f"{_ny_hhmm(s.open_ns)}-{_ny_hhmm(s.close_ns)}"

    # -- building -----------------------------------------------------------------------------
    def _configured(self, day: int) -> Session:
        date = dt.date.fromordinal(day).strftime("%Y%m%d")
        return Session(ny_time_ns(date, self.session_start), ny_time_ns(date, self.session_end))

    def _build(self, day: int) -> Session | None:
        configured = self._configured(day)
        if self._days is None or not self.first_day <= day <= self.last_day:
            if self._days is not None:
                self.outside_schedule += 1
            return configured if dt.date.fromordinal(day).weekday() < 5 else None
        exchange = self._days.get(day)
        if exchange is None:
            return None  # a holiday (or a weekend)
        opens = max(configured.open_ns, exchange.open_ns) if exchange.late_open else configured.open_ns
        closes = min(configured.close_ns, exchange.close_ns) if exchange.early_close else configured.close_ns
        return Session(opens, closes, exchange.early_close and closes < configured.close_ns)


@functools.lru_cache(maxsize=16)
def market_calendar(market: MarketSettings | None = None) -> MarketCalendar:
    """The calendar of these settings (one per process and settings: services share it)."""
    market = market or MarketSettings()
    if market.calendar == WEEKDAYS:
        return MarketCalendar(WEEKDAYS, market.session_start, market.session_end, None)
    days, first, last = _schedule(market.calendar, market.cache)
    return MarketCalendar(market.calendar, market.session_start, market.session_end, days, first, last)


def _schedule(name: str, cache: Path) -> tuple[dict[int, ExchangeDay], int, int]:
    version = metadata.version("exchange-calendars")
    path = cache / f"{name}-{version}.json"
    today = dt.date.today().toordinal()
    with contextlib.suppress(OSError, ValueError, KeyError):
        data = json.loads(path.read_text())
        if data["last"] - today >= MIN_DAYS_AHEAD:
            return _decode(data)
    data = _from_library(name)
    with contextlib.suppress(OSError):  # a read-only disk only costs the next process a rebuild
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)  # atomic: processes starting together never read half a file
    return _decode(data)


def _from_library(name: str) -> dict[str, object]:
    import exchange_calendars as xcals

    try:
        cal = xcals.get_calendar(name, start=SCHEDULE_START)
    except xcals.errors.InvalidCalendarName:
        raise CalendarUnavailable(
            f"market.calendar {name!r} is not an exchange-calendars name (e.g. XNYS, XNAS) nor {WEEKDAYS!r}"
        ) from None
    early = {d.toordinal() for d in cal.early_closes.date}
    late = {d.toordinal() for d in cal.late_opens.date}
    opens = cal.schedule["open"].astype("int64").tolist()
    closes = cal.schedule["close"].astype("int64").tolist()
    ordinals = [d.toordinal() for d in cal.schedule.index.date]
    rows = [[d, o, c, d in late, d in early] for d, o, c in zip(ordinals, opens, closes, strict=True)]
    return {"name": name, "first": ordinals[0], "last": ordinals[-1], "days": rows}


def _decode(data: dict[str, object]) -> tuple[dict[int, ExchangeDay], int, int]:
    rows = data["days"]
    assert isinstance(rows, list)
    days = {int(d): ExchangeDay(int(o), int(c), bool(lo), bool(ec)) for d, o, c, lo, ec in rows}
    return days, int(data["first"]), int(data["last"])  # type: ignore[call-overload]


def _ny_hhmm(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns / SECOND_NS, tz=NEW_YORK).strftime("%H:%M")

"""IB's reset windows: when a disconnect is expected, and when one has lasted too long.

IB restarts its systems daily (North America around 00:15-01:45 New York) and weekly (Friday
23:00 to Saturday 03:00); TWS / IB Gateway also auto-restart once a day. A disconnect that starts
inside a window is expected until the window ends; any other is expected for ``max_disconnect_s``.
Past that, a person must know (QuantConnect's IB brokerage once traded blind for days after a
Sunday restart that never came back). Windows are configuration: IB moves them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAILY = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_WEEKLY = re.compile(r"^(\w{3}) (\d{2}):(\d{2})-(\w{3}) (\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Window:
    """Minutes of the week (Monday 00:00 = 0) from start to end; daily windows repeat 7 times."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        week = 7 * 24 * 60
        length = (self.end - self.start) % week
        return (minute - self.start) % week < length

    def end_after(self, minute: int) -> int:
        """Minutes from ``minute`` (inside the window) to its end."""
        return (self.end - minute) % (7 * 24 * 60)


def parse_windows(specs: list[str]) -> list[Window]:
    out: list[Window] = []
    for text in specs:
        daily, weekly = _DAILY.match(text.strip()), _WEEKLY.match(text.strip())
        if daily:
            h0, m0, h1, m1 = map(int, daily.groups())
            out += [Window(d * 1440 + h0 * 60 + m0, d * 1440 + h1 * 60 + m1) for d in range(7)]
        elif weekly and weekly.group(1) in DAYS and weekly.group(4) in DAYS:
            day0, hh0, mm0, day1, hh1, mm1 = weekly.groups()
            start = DAYS.index(day0) * 1440 + int(hh0) * 60 + int(mm0)
            out.append(Window(start, DAYS.index(day1) * 1440 + int(hh1) * 60 + int(mm1)))
        else:
            raise ValueError(f"reset window {text!r}: expected 'HH:MM-HH:MM' or 'Fri 23:00-Sat 03:00'")
    return out


def _week_minute(ts_s: float) -> int:
    local = dt.datetime.fromtimestamp(ts_s, NY)
    return local.weekday() * 1440 + local.hour * 60 + local.minute


def expected_until(disconnected_at_s: float, windows: list[Window], max_disconnect_s: float) -> float:
    """Epoch seconds until which a disconnect that began at ``disconnected_at_s`` is expected."""
    minute = _week_minute(disconnected_at_s)
    inside = [w.end_after(minute) for w in windows if w.contains(minute)]
    if inside:
        return disconnected_at_s + max(inside) * 60 + max_disconnect_s
    return disconnected_at_s + max_disconnect_s

"""Moments the tests share, on the shipped day (2013-10-08, a Tuesday), and clocks set to them."""

from __future__ import annotations

from libs.common.clock import SimClock
from proto.units import MINUTE_NS, MS_NS, SECOND_NS

OPEN = 1_381_239_000_000_000_000  # 2013-10-08 09:30 New York (13:30 UTC), the sample day's open
T0 = OPEN + 30 * MINUTE_NS  # 10:00 New York: inside the session, with room either side
MS, S, MINUTE = MS_NS, SECOND_NS, MINUTE_NS


def clock(ts: int = T0) -> SimClock:
    return SimClock(ts)

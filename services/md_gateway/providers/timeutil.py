"""New York local times of recorded data -> integer ns UTC (kept in libs/common/markettime.py)."""

from __future__ import annotations

from libs.common.markettime import NEW_YORK, ny_midnight_ns, regular_session

__all__ = ["NEW_YORK", "ny_midnight_ns", "regular_session"]

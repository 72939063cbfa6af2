"""Market-data providers: each yields raw records (see services/md_gateway/core.py) in time order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from libs.common.calendar import MarketCalendar


class Provider(Protocol):
    name: str

    def session(self, calendar: MarketCalendar | None = None) -> tuple[int, int] | None:
        """The regular session [open, close) in ns UTC of the recorded day, by the market
        calendar (the default one when none is given), or None when every tick counts."""

    def records(self) -> Iterator[tuple[Any, ...]]: ...

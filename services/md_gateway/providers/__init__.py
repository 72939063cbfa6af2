"""Market-data providers: each yields raw records (see services/md_gateway/core.py) in time order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class Provider(Protocol):
    name: str

    def session(self) -> tuple[int, int] | None:
        """Regular-session bounds [open, close) in ns UTC, or None when every tick counts."""

    def records(self) -> Iterator[tuple[Any, ...]]: ...

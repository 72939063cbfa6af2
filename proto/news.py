"""News as it arrives, before any interpretation: headlines from IB, files and webhooks."""

from __future__ import annotations

from proto.base import DurableEvent, Identifier


class NewsItem(DurableEvent, frozen=True, kw_only=True):
    """One story or bulletin. ``ts_event`` is when the source says it happened."""

    news_id: Identifier
    source: str  # e.g. "ib:BRFG" (provider code), "ib:bulletin", "file", "webhook"
    headline: str
    symbols: list[str] = []
    body: str = ""
    url: str = ""

    def dedupe_key(self) -> str:
        return f"news:{self.news_id}"

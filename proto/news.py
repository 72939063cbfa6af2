"""News as it arrives, before any interpretation: headlines from IB, files and webhooks."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Identifier, Symbol


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


class SentimentScore(DurableEvent, frozen=True, kw_only=True):
    """A headline's sentiment for one ticker it names (one event per ticker).

    ``ts_event`` is the headline's time; ``latency_us`` how long the model took for the batch the
    headline was scored in, divided by the batch size; ``queue_us`` from the headline's arrival at
    the service to its score."""

    news_id: Identifier
    symbol: Symbol
    polarity: float  # p(positive) - p(negative), in [-1, 1]
    label: Literal["negative", "neutral", "positive"]
    probabilities: list[float]  # negative, neutral, positive
    events: list[str] = []  # event tags: earnings, guidance, upgrade, m&a, fda, ...
    model_version: str = ""
    latency_us: int = 0
    queue_us: int = 0
    source: str = ""
    headline: str = ""
    embedding: list[float] = []  # the pooled encoder output, when the service is asked for it

    def dedupe_key(self) -> str:
        return f"sentiment:{self.news_id}:{self.symbol}:{self.model_version}"

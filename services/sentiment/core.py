"""The sentiment core: headlines in; per-ticker SentimentScore events out. Pure: no I/O, no model.

The model is the runtime's (it runs it on a micro-batch, off the event loop); the core decides
what to score and turns probabilities into events, in two steps so that batching, threading and
timing stay out of it:

- ``admit(item)``: tag tickers and events; drop empty and duplicate stories (the same story from
  IB, a file and a webhook is scored once); return a Pending, or why not (counted);
- ``scored(pending, probabilities, latency_us, now)``: one SentimentScore per ticker.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from libs.common.clock import Clock
from proto.news import NewsItem, SentimentScore
from services.sentiment.tagging import StoryDeduper, Tagger

LABELS = ("negative", "neutral", "positive")
MAX_TEXT = 512  # characters scored: a headline, or the start of a body


@dataclass(frozen=True)
class Pending:
    item: NewsItem
    text: str
    symbols: list[str]
    events: list[str]
    received_ns: int
    named: list[str]  # every ticker the story names (the deduplication key), before any filter


class SentimentCore:
    def __init__(
        self,
        clock: Clock,
        tagger: Tagger,
        dedupe_window_s: float = 3600.0,
        symbols: Sequence[str] = (),
        model_version: str = "",
    ) -> None:
        self.clock = clock
        self.tagger = tagger
        self.deduper = StoryDeduper(int(dedupe_window_s * 1e9))
        self.only = {s.upper() for s in symbols}  # empty: every ticker
        self.model_version = model_version
        self.stats: collections.Counter[str] = collections.Counter()

    def admit(self, item: NewsItem) -> Pending | str:
        """The headline to score, or the reason it is not scored (counted in ``stats``)."""
        self.stats["received"] += 1
        text = " ".join(item.headline.split())[:MAX_TEXT]
        reason = ""
        if not text:
            reason = "empty"
        else:
            named = self.tagger.tickers(text, item.symbols)
            symbols = [s for s in named if s in self.only] if self.only else named
            if self.deduper.seen(item.ts_event, text, named):
                reason = "duplicate"
            elif symbols:
                return Pending(item, text, symbols, self.tagger.events(text), self.clock.now_ns(), named)
            else:
                reason = "no_ticker"
        self.stats[f"dropped.{reason}"] += 1
        return reason

    def release(self, pending: Pending) -> None:
        """A pending headline that was not scored (the model failed) may be admitted again."""
        self.deduper.release(pending.text, pending.named)
        self.stats["released"] += 1

    def scored(
        self,
        pending: Pending,
        probabilities: Sequence[float],
        latency_us: int,
        embedding: Sequence[float] = (),
    ) -> list[SentimentScore]:
        probs = [float(p) for p in probabilities]
        if len(probs) != 3 or not all(0.0 <= p <= 1.0 for p in probs):
            self.stats["dropped.bad_model_output"] += 1
            return []
        label = LABELS[max(range(3), key=probs.__getitem__)]
        now = self.clock.now_ns()
        out = [
            SentimentScore(
                ts_event=pending.item.ts_event,
                ts_init=now,
                news_id=pending.item.news_id,
                symbol=symbol,
                polarity=probs[2] - probs[0],
                label=label,  # type: ignore[arg-type]
                probabilities=probs,
                events=pending.events,
                model_version=self.model_version,
                latency_us=latency_us,
                queue_us=max(0, (now - pending.received_ns) // 1_000),
                source=pending.item.source,
                headline=pending.text,
                embedding=[float(x) for x in embedding],
            )
            for symbol in pending.symbols
        ]
        self.stats["scored"] += 1
        self.stats["published"] += len(out)
        return out

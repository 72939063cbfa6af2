"""sentiment runtime: news.raw in (a durable JetStream consumer that replicas share), the model run
on micro-batches off the event loop, news.sentiment.SYM out; an optional HTTP webhook (FastAPI)
that puts external headlines on news.raw; hot reload of a newly promoted model.

Micro-batching: a headline waits at most ``batch_wait_ms`` for others (or until ``batch_max``
are waiting); the batch is scored in one call in a worker thread. Headlines are acked only after
their scores are published, so a crash loses none (JetStream redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from prometheus_client import Counter, Histogram

from libs.common.bus import Delivery
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.runtime import Runtime, ServiceApp
from proto.alerts import Alert
from proto.news import NewsItem
from services.sentiment.core import Pending, SentimentCore
from services.sentiment.tagging import Tagger

log = get_logger(__name__)
# Finer than the runtime's hop buckets around the 10 ms per-headline budget.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.05, 0.1, 0.25, 1.0)


class SentimentApp(ServiceApp):
    name = "sentiment"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.cfg = settings.sentiment
        self.core: SentimentCore | None = None
        self.scorer: Any = None
        self.model_error = ""
        self.waiting: list[tuple[Pending | None, Delivery[NewsItem]]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reloader: asyncio.Task[None] | None = None
        self._webhook: Any = None
        self.batches = 0
        self.reloads = 0
        self.webhook_accepted = 0

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        r = rt.metrics.registry
        self.latency = Histogram(
            "tradefleet_sentiment_latency_seconds",
            "model time per headline (batch time / batch size)",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.batch_sizes = Histogram(
            "tradefleet_sentiment_batch_size",
            "headlines per model call",
            registry=r,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.dropped = Counter(
            "tradefleet_sentiment_dropped_total", "headlines not scored, by reason", ["reason"], registry=r
        )
        tagger = Tagger(self.cfg.companies)
        self.core = SentimentCore(rt.clock, tagger, self.cfg.dedupe_window_s, self.cfg.symbols)
        await self._load()
        # A short ack wait: a headline fetched by a replica that died comes back in seconds (a
        # redelivery is harmless: stories are deduplicated, scores carry a Nats-Msg-Id).
        await rt.subscribe(
            "news.raw",
            self._on_news,
            types=NewsItem,
            durable="sentiment",
            new_only=True,
            manual_ack=True,
            ack_wait_s=5.0,
        )
        if self.cfg.model_path is None:
            self._reloader = asyncio.create_task(self._watch_registry(), name="sentiment-reload")
        if self.cfg.webhook_port is not None:
            from services.sentiment.webhook import WebhookServer

            self._webhook = WebhookServer(
                self, self.cfg.webhook_host, self.cfg.webhook_port, self.cfg.webhook_token.get_secret_value()
            )
            await self._webhook.start()

    # -- the model ---------------------------------------------------------------------------------
    def _load_blocking(self) -> Any:
        from models.sentiment.serving import HfScorer, load_active

        if self.cfg.model_path is not None:
            return HfScorer(self.cfg.model_path)
        return load_active(self.cfg.registry, self.cfg.engine, self.cfg.cache)

    async def _load(self) -> None:
        try:
            scorer = await asyncio.to_thread(self._load_blocking)
        except Exception as exc:  # a missing package, a bad export, failed probes: say so, keep running
            scorer, self.model_error = None, repr(exc)
        else:
            self.model_error = (
                "" if scorer is not None else f"no active sentiment model in {self.cfg.registry}"
            )
        if scorer is None:
            log.error(
                "sentiment model unavailable: headlines are counted, not scored", error=self.model_error
            )
            await self._alert("critical", "sentiment model unavailable", self.model_error)
            return
        self._install(scorer)

    def _install(self, scorer: Any) -> None:
        assert self.core is not None
        self.scorer = scorer
        self.core.model_version = scorer.version
        log.info("sentiment model loaded", version=scorer.version, engine=scorer.engine)

    async def _watch_registry(self) -> None:
        from models.sentiment.serving import active_version, load_version

        refused: str | None = None  # a version that failed to load is not tried every poll
        while True:
            await asyncio.sleep(self.cfg.reload_interval_s)
            active = active_version(self.cfg.registry)
            current = self.scorer.version if self.scorer is not None else None
            if active is None or active in (current, refused):
                continue
            try:
                scorer = await asyncio.to_thread(
                    load_version, self.cfg.registry, active, self.cfg.engine, self.cfg.cache
                )
            except Exception as exc:
                refused = active
                log.error("promoted sentiment model failed to load; keeping the current one", error=repr(exc))
                await self._alert("warning", "promoted sentiment model refused", f"{active}: {exc!r}")
                continue
            self._install(scorer)
            self.reloads += 1

    # -- headlines in ------------------------------------------------------------------------------
    async def _on_news(self, d: Delivery[NewsItem]) -> None:
        assert self.core is not None
        admitted = self.core.admit(d.event)
        if isinstance(admitted, Pending) and self.scorer is None:
            self.core.stats["dropped.no_model"] += 1
            admitted = "no_model"
        if isinstance(admitted, str):
            self.dropped.labels(admitted).inc()
        self.waiting.append((admitted if isinstance(admitted, Pending) else None, d))
        if len(self.waiting) >= self.cfg.batch_max:
            self._flush_soon(0.0)
        elif self._timer is None:
            self._flush_soon(self.cfg.batch_wait_ms / 1000)

    def _flush_soon(self, delay_s: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay_s, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush(), name="sentiment-flush")

    async def _flush(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting[: self.cfg.batch_max], self.waiting[self.cfg.batch_max :]
            try:
                await self._score(batch)
            except Exception as exc:  # the model failed: redeliver later rather than lose them
                log.error("sentiment batch failed; headlines will be redelivered", error=repr(exc))
                assert self.core is not None
                for pending, d in batch:
                    if pending is not None:
                        self.core.release(pending)  # else the redelivery is its own duplicate
                    await d.nak(1.0)

    async def _score(self, batch: list[tuple[Pending | None, Delivery[NewsItem]]]) -> None:
        assert self.core is not None
        todo = [p for p, _ in batch if p is not None]
        if todo:
            started = time.perf_counter()
            probs, pooled = await asyncio.to_thread(self.scorer.predict, [p.text for p in todo])
            took = time.perf_counter() - started
            per = took / len(todo)
            self.batches += 1
            self.batch_sizes.observe(len(todo))
            for i, pending in enumerate(todo):
                self.latency.observe(per)
                embedding = pooled[i].tolist() if self.cfg.embeddings and pooled is not None else []
                for score in self.core.scored(pending, probs[i].tolist(), int(per * 1e6), embedding):
                    await self.rt.emit(score)
        for _, d in batch:
            await d.ack()

    async def publish_news(self, item: NewsItem) -> None:
        """The webhook's way in: onto news.raw like any other source (and deduplicated there)."""
        await self.rt.emit(item)

    async def _alert(self, severity: Any, title: str, body: str) -> None:
        now = self.rt.now_ns()
        alert = Alert(
            ts_event=now,
            ts_init=now,
            alert_id=f"sentiment-{now}",
            severity=severity,
            source="sentiment",
            title=title,
            body=body[:2000],
            dedupe=f"sentiment:{title}",
        )
        with contextlib.suppress(Exception):
            await self.rt.emit(alert)

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
        if self._webhook is not None:
            await self._webhook.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self.waiting:
            await self._flush()
        if self._flush_task is not None:
            with contextlib.suppress(Exception):
                await self._flush_task

    def busy(self) -> bool:
        return bool(self.waiting) or (self._flush_task is not None and not self._flush_task.done())

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "model": None
            if self.scorer is None
            else {"version": self.scorer.version, "engine": self.scorer.engine},
            "model_error": self.model_error,
            "counters": {} if core is None else dict(core.stats),
            "batches": self.batches,
            "reloads": self.reloads,
            "webhook": None if self._webhook is None else self._webhook.url,
            "webhook_accepted": self.webhook_accepted,
        }

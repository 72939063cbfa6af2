"""POST /news: external feeds put headlines on news.raw (FastAPI, served by uvicorn in the
sentiment service's event loop). A body is one headline or a list of them:

    {"headline": "...", "symbols": ["IBM"], "source": "vendor", "id": "123",
     "ts": "2026-11-29T14:31:05Z" | epoch s/ms/ns}   (ts defaults to now)

Answers 202 with the news ids accepted; 422 with the reason for a malformed one (nothing of
that request is published); 401 without the configured bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from libs.common.news_file import parse_time
from proto.news import NewsItem

if TYPE_CHECKING:
    from services.sentiment.runtime import SentimentApp


class Headline(BaseModel):
    headline: str = Field(min_length=1, max_length=2000)
    symbols: list[str] = Field(default_factory=list, max_length=50)
    source: str = Field("webhook", min_length=1, max_length=64)
    id: str | None = Field(None, max_length=100)
    ts: str | int | float | None = None
    url: str = Field("", max_length=2000)
    body: str = Field("", max_length=20_000)


def build_app(owner: SentimentApp, token: str) -> FastAPI:
    api = FastAPI(title="tradefleet news webhook", docs_url=None, redoc_url=None)

    @api.post("/news", status_code=202)
    async def post_news(
        payload: Headline | list[Headline], authorization: str | None = Header(None)
    ) -> dict[str, Any]:
        if token and authorization != f"Bearer {token}":
            raise HTTPException(401, "a bearer token is required")
        items = payload if isinstance(payload, list) else [payload]
        now = owner.rt.now_ns()
        events = []
        for h in items:
            ts = now if h.ts is None else parse_time(h.ts)
            if ts is None:
                raise HTTPException(422, f"ts {h.ts!r}: ISO 8601 or epoch s/ms/us/ns")
            digest = hashlib.blake2b(f"{h.source}|{ts}|{h.headline}".encode(), digest_size=10).hexdigest()
            events.append(
                NewsItem(
                    ts_event=ts,
                    ts_init=now,
                    news_id=f"{h.source}:{h.id}" if h.id else f"webhook:{digest}",
                    source=h.source,
                    headline=h.headline,
                    symbols=[s.strip().upper().lstrip("$") for s in h.symbols if s.strip()],
                    body=h.body,
                    url=h.url,
                )
            )
        for event in events:
            await owner.publish_news(event)
        owner.webhook_accepted += len(events)
        return {"accepted": [e.news_id for e in events]}

    return api


class WebhookServer:
    def __init__(self, owner: SentimentApp, host: str, port: int, token: str) -> None:
        import uvicorn

        config = uvicorn.Config(
            build_app(owner, token), host=host, port=port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.host = host
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str | None:
        servers = getattr(self.server, "servers", None) or []
        for s in servers:
            for sock in s.sockets:
                return f"http://{self.host}:{sock.getsockname()[1]}"
        return None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(), name="news-webhook")
        while not self.server.started:  # uvicorn offers no event to await
            if self.task.done():
                self.task.result()  # the bind failed: raise why
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 5)

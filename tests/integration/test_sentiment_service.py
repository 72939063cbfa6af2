"""The sentiment service on a real NATS: headlines from news.raw become per-ticker scores in
micro-batches, duplicates from a second source are scored once, the latency histogram is
exported, the webhook feeds news.raw, a missing model is loud and loses nothing of the service,
and the CLI scores offline."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from libs.common.config import Settings, load_settings
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime
from proto.alerts import Alert
from proto.news import NewsItem, SentimentScore
from services.sentiment.runtime import SentimentApp
from tests.helpers import REPO, await_until, collector
from tests.kit import stubs

T0 = 1_381_239_000_000_000_000
# Held-out-style headlines with an obvious reading (the model was not trained on these).
LABELLED = [
    ("$IBM beats estimates and raises its full-year guidance", "positive"),
    ("$IBM downgraded to sell at Morgan Stanley, price target cut to $150", "negative"),
    ("$BAC shares plunge after a surprise quarterly loss", "negative"),
    ("$BAC upgraded to buy from neutral at Goldman Sachs", "positive"),
    ("$IBM to present at an investor conference on Tuesday", "neutral"),
    ("$BAC price target raised to $20 from $17 at Oppenheimer", "positive"),
    ("$IBM stock falls as revenue misses expectations", "negative"),
    ("$BAC announces the date of its third-quarter earnings call", "neutral"),
]


def settings_for(nats_url: str, tmp: Path, **sentiment: Any) -> Settings:
    return load_settings(
        None,
        nats={"url": nats_url},
        sentiment={"cache": str(REPO / "var" / "sentiment-cache"), "batch_wait_ms": 50, **sentiment},
    )


async def started(settings: Settings) -> tuple[Runtime, SentimentApp, asyncio.Task[int]]:
    rt = Runtime("sentiment", settings)
    app = SentimentApp(settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    await await_until(lambda: rt.ready or task.done(), 120, what="sentiment ready")
    assert not task.done(), task.exception() if task.done() else None
    return rt, app, task


def news(i: int, headline: str, source: str = "test") -> NewsItem:
    return stubs.news(headline, T0 + i * 1_000_000_000, f"{source}:{i}", source, ts_init=T0)


async def test_headlines_are_scored_in_batches_once_per_story(nats_url: str, tmp_path: Path) -> None:
    settings = settings_for(nats_url, tmp_path)
    rt, app, task = await started(settings)
    nc, scores = await collector(nats_url, "news.sentiment.>")
    feeder = NatsBus(settings.nats, "feeder")
    await feeder.connect()
    try:
        for i, (text, _) in enumerate(LABELLED):
            await feeder.publish("news.raw", news(i, text))
        await feeder.publish("news.raw", news(0, "UPDATE: " + LABELLED[0][0], source="wire"))  # same story
        await feeder.publish("news.raw", news(99, "Markets are quiet today"))  # no ticker
        await await_until(
            lambda: app.core is not None and app.core.stats["received"] == 10, 30, what="all in"
        )
        await await_until(lambda: len(scores) == len(LABELLED), 30, what="all scored")
        assert all(isinstance(s, SentimentScore) for s in scores)
        by_id = {s.news_id: s for s in scores}
        right = sum(by_id[f"test:{i}"].label == label for i, (_, label) in enumerate(LABELLED))
        assert right >= 7, [(s.headline, s.label) for s in scores]
        first = by_id["test:0"]
        assert first.symbol == "IBM" and first.model_version == app.scorer.version
        assert "earnings" in first.events or "guidance" in first.events
        assert abs(first.polarity - (first.probabilities[2] - first.probabilities[0])) < 1e-9
        stats = app.core.stats
        assert stats["dropped.duplicate"] == 1 and stats["dropped.no_ticker"] == 1
        assert app.batches < len(LABELLED)  # headlines that arrive together share a model call
        body = await asyncio.to_thread(_get, rt.http_port, "/metrics")
        assert "tradefleet_sentiment_latency_seconds_bucket" in body
        assert 'tradefleet_sentiment_dropped_total{reason="duplicate"} 1.0' in body
    finally:
        await feeder.close()
        await nc.drain()
        rt.request_stop()
        await asyncio.wait_for(task, 30)


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return str(resp.read().decode())


def _post(url: str, body: Any, token: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + "/news", json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


async def test_the_webhook_puts_headlines_on_news_raw(nats_url: str, tmp_path: Path) -> None:
    settings = settings_for(nats_url, tmp_path, webhook_port=0, webhook_token="s3cret")
    rt, app, task = await started(settings)
    nc, scores = await collector(nats_url, "news.sentiment.>")
    try:
        url = app._webhook.url
        assert url is not None
        status, _ = await asyncio.to_thread(_post, url, {"headline": "$IBM soars"}, None)
        assert status == 401
        status, body = await asyncio.to_thread(_post, url, {"headline": "$IBM soars", "ts": "soon"}, "s3cret")
        assert status == 422 and "ts" in json.dumps(body)
        batch = [
            {"headline": "IBM wins a $1B cloud contract", "symbols": ["IBM"], "source": "vendor", "id": "a1"},
            {"headline": "$BAC faces a new lawsuit over fees", "ts": "2013-10-08T14:00:00Z"},
        ]
        status, body = await asyncio.to_thread(_post, url, batch, "s3cret")
        assert status == 202 and body["accepted"][0] == "vendor:a1"
        await await_until(lambda: len(scores) == 2, 30, what="webhook headlines scored")
        assert {s.symbol for s in scores} == {"IBM", "BAC"} and app.webhook_accepted == 2
        bac = next(s for s in scores if s.symbol == "BAC")
        assert bac.ts_event == 1_381_240_800_000_000_000 and "lawsuit" in bac.events
    finally:
        await nc.drain()
        rt.request_stop()
        await asyncio.wait_for(task, 30)


async def test_without_a_model_the_service_runs_counts_and_pages(nats_url: str, tmp_path: Path) -> None:
    settings = settings_for(nats_url, tmp_path, registry=str(tmp_path / "empty-registry"))
    nc, alerts = await collector(nats_url, "alert.>")
    rt, app, task = await started(settings)
    feeder = NatsBus(settings.nats, "feeder")
    await feeder.connect()
    try:
        # Its own news id: JetStream drops a second "test:1" within its duplicate window.
        await feeder.publish("news.raw", news(1, "$IBM beats", source="nomodel"))
        await await_until(
            lambda: app.core is not None and app.core.stats["dropped.no_model"] == 1, 30, what="no model"
        )
        assert app.status()["model"] is None and "no active sentiment model" in app.model_error
        await await_until(
            lambda: any(isinstance(a, Alert) and a.source == "sentiment" for a in alerts), 10, what="alert"
        )
        assert rt.ready
    finally:
        await feeder.close()
        await nc.drain()
        rt.request_stop()
        await asyncio.wait_for(task, 30)


def test_the_cli_scores_offline(tmp_path: Path) -> None:
    """No network and the hub told to stay offline: the model still loads and scores."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # a download attempt would fail here
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "PYTHONPATH": str(REPO),
        "TRADEFLEET_SENTIMENT__CACHE": str(tmp_path / "cache"),  # exported afresh, offline too
    }
    lines = "$IBM beats estimates and raises guidance\n\n$BAC plunges after a quarterly loss\n"
    out = subprocess.run(
        [sys.executable, "-m", "tradefleet", "sentiment", "score"],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r.get("label") for r in rows] == ["positive", None, "negative"]
    assert rows[1] == {"error": "empty line"}
    assert abs(sum(rows[0]["probabilities"].values()) - 1) < 1e-6 and -1 <= rows[2]["polarity"] < 0
    # what the service would attach, and the engine that actually served, said once on stderr
    assert (rows[0]["tickers"], rows[0]["events"]) == (["IBM"], ["earnings", "guidance"])
    assert rows[2]["tickers"] == ["BAC"] and rows[0]["engine"] in ("onnx-int8", "onnx", "torch")
    served = f"sentiment model {rows[0]['model_version']} served by {rows[0]['engine']}"
    assert served in out.stderr and "refused" not in out.stderr  # no warning per engine tried


async def test_a_promoted_model_is_loaded_while_running(nats_url: str, tmp_path: Path) -> None:
    from models.sentiment import serving

    registry = tmp_path / "registry"
    shutil.copytree(REPO / "models" / "registry" / "sentiment", registry / "sentiment")
    old = serving.active_version(registry)
    assert old is not None
    settings = settings_for(nats_url, tmp_path, registry=str(registry), reload_interval_s=0.2)
    rt, app, task = await started(settings)
    try:
        assert app.scorer.version == old
        new = old[:-8] + "promoted"  # the same weights under a new version: what a promotion does
        shutil.copytree(registry / "sentiment" / old, registry / "sentiment" / new)
        serving.activate(registry, new)
        await await_until(lambda: app.reloads == 1, 60, what="reloaded")
        assert app.scorer.version == new and app.core is not None and app.core.model_version == new
    finally:
        rt.request_stop()
        await asyncio.wait_for(task, 30)

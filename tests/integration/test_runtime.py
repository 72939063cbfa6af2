"""The service runtime on real NATS and PostgreSQL: bad input, HTTP endpoints, traces."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from libs.common import codec
from libs.common.bus import Delivery
from libs.common.config import load_settings
from libs.common.logging import setup_logging
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime, ServiceApp
from libs.common.storage.migrate import migrate
from proto.alerts import DeadLetter
from proto.market import Quote
from services.recorder.runtime import RecorderApp
from tests.helpers import await_until
from tests.kit.samples import T0


async def _start(rt: Runtime, app: ServiceApp) -> asyncio.Task[int]:
    task = asyncio.create_task(rt.run(app, install_signals=False))
    await await_until(lambda: rt.ready or task.done(), what=f"{rt.service} ready")
    assert not task.done(), task.exception() if task.done() else None
    return task


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def _quote_array(bid: float, ask: float = 182.07) -> bytes:
    return msgspec.msgpack.encode(["Quote", T0, T0, "IBM", bid, ask, 100, 100, "P", 0])


async def test_bad_input_is_counted_logged_once_dead_lettered_and_survived(
    nats_url: str, pg_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        None,
        nats={"url": nats_url},
        db={"url": pg_dsn},
        recorder={"flush_interval_ms": 20, "spill_dir": str(tmp_path / "spill")},
    )
    setup_logging("recorder", "INFO", "json")
    migrate(pg_dsn, settings.db)
    rt = Runtime("recorder", settings)
    task = await _start(rt, RecorderApp(settings, pg_dsn))

    feeder = NatsBus(settings.nats, "feeder")
    await feeder.connect()
    dlq_seen: list[DeadLetter] = []

    async def collect(msg: Any) -> None:
        event = codec.decode(msg.data)
        assert isinstance(event, DeadLetter)
        dlq_seen.append(event)

    dlq_sub = await feeder.js.subscribe("dlq.recorder", ordered_consumer=True, cb=collect)
    bad = {
        "malformed": [b"\xc1\xff\x00garbage", b""],
        "unknown_type": [msgspec.msgpack.encode(["Teleport", T0, T0, "IBM"])],
        "invalid_value": [_quote_array(float("nan")), _quote_array(-182.05), _quote_array(182.09)],
        "wrong_subject": [
            codec.encode(
                Quote(ts_event=T0, ts_init=T0, symbol="IBM", bid=1.0, ask=1.01, bid_size=1, ask_size=1)
            )
        ],
    }
    for reason, payloads in bad.items():
        subject = "md.trade.IBM" if reason == "wrong_subject" else "md.quote.IBM"
        for payload in payloads * 2:  # every kind twice: logged once
            await feeder.publish_raw(subject, payload)
    good = Quote(ts_event=T0, ts_init=T0, symbol="IBM", bid=182.05, ask=182.07, bid_size=300, ask_size=200)
    await feeder.publish("md.quote.IBM", good)
    await feeder.flush()

    expected = {"malformed": 4, "unknown_type": 2, "invalid_value": 6, "wrong_subject": 2}
    await await_until(lambda: rt.metrics.dropped_by_reason() == expected, what="drop counters")
    await await_until(
        lambda: rt.app.status().get("rows_stored", {}).get("quotes") == 1, what="good quote stored"
    )
    await await_until(lambda: len(dlq_seen) == 14, what="dead letters")
    assert {d.reason for d in dlq_seen} == set(expected)
    # The dead letter keeps the refused payload whole.
    assert {d.payload for d in dlq_seen if d.reason == "invalid_value"} == set(bad["invalid_value"])
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT symbol, bid, ask, ts FROM quotes").fetchall()
    assert len(row) == 1 and row[0][:3] == ("IBM", 182.05, 182.07)
    assert int(row[0][3].timestamp()) == T0 // 1_000_000_000

    refused_lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if "message refused" in line
    ]
    assert sorted(r["reason"] for r in refused_lines) == sorted(expected)  # once per kind
    status, body = await asyncio.to_thread(_get, rt.http_port or 0, "/metrics")
    assert status == 200 and b'tf_events_dropped_total{reason="invalid_value"' in body.replace(
        b'service="recorder",subject="md.quote.*",', b""
    )

    await dlq_sub.unsubscribe()
    await feeder.close()
    rt.request_stop()
    assert await asyncio.wait_for(task, 20) == 0


class _Relay(ServiceApp):
    """Receives a quote and republishes it under a new subject: one hop of a pipeline."""

    def __init__(self, source: str, target: str | None) -> None:
        super().__init__()
        self.source, self.target = source, target
        self.received: list[Delivery] = []

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        await rt.subscribe(self.source, self.on_event)

    async def on_event(self, d: Delivery) -> None:
        self.received.append(d)
        if self.target:
            await self.rt.publish(self.target, d.event)


async def test_http_endpoints_and_one_trace_across_services(nats_url: str) -> None:
    sym = f"T{uuid.uuid4().hex[:5].upper()}"
    settings = load_settings(None, nats={"url": nats_url}, telemetry={"tracing": "memory"})
    hop = Runtime("hop", settings)
    sink = Runtime("sink", settings)
    hop_app, sink_app = _Relay(f"md.quote.{sym}", f"md.quote.{sym}X"), _Relay(f"md.quote.{sym}X", None)
    sink_task = await _start(sink, sink_app)
    hop_task = await _start(hop, hop_app)

    assert (await asyncio.to_thread(_get, hop.http_port or 0, "/healthz"))[0] == 200
    assert (await asyncio.to_thread(_get, hop.http_port or 0, "/readyz"))[0] == 200
    source = Runtime("source", settings)
    await source.bus.connect()  # type: ignore[attr-defined]
    quote = Quote(ts_event=T0, ts_init=T0, symbol=sym, bid=1.0, ask=1.01, bid_size=1, ask_size=1)
    with source.tracing.tracer.start_as_current_span("tick") as root:
        await source.publish(f"md.quote.{sym}", quote)
    await source.bus.flush()
    await await_until(lambda: len(sink_app.received) == 1, what="relayed quote")

    trace_id = root.get_span_context().trace_id
    assert hop.tracing.memory_exporter is not None and sink.tracing.memory_exporter is not None
    hop_spans = hop.tracing.memory_exporter.get_finished_spans()
    sink_spans = sink.tracing.memory_exporter.get_finished_spans()
    assert [s.context.trace_id for s in hop_spans] == [trace_id]
    assert [s.context.trace_id for s in sink_spans] == [trace_id]
    assert sink_spans[0].parent is not None and sink_spans[0].parent.span_id == hop_spans[0].context.span_id
    assert "traceparent" in (sink_app.received[0].headers or {})

    status, body = await asyncio.to_thread(_get, hop.http_port or 0, "/metrics")
    text = body.decode()
    assert 'tf_events_received_total{service="hop",subject="md.quote.*"} 1.0' in text
    assert "tf_event_latency_seconds_bucket" in text
    status, body = await asyncio.to_thread(_get, hop.http_port or 0, "/status")
    assert status == 200 and json.loads(body)["ready"] is True

    await source.bus.close()
    for rt, task in ((hop, hop_task), (sink, sink_task)):
        rt.request_stop()
        assert await asyncio.wait_for(task, 20) == 0

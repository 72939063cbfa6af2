"""OpenTelemetry tracing with the W3C trace context carried in NATS headers.

Off by default: with tracing off no span is ever created on the hot path.

Traces start at a sampled market-data record: the md-gateway makes 1 record in every
``telemetry.trace_sample_every`` the root of a trace of its own (``TickSampler``). A micro-batch
carries at most one such record: its message's ``traceparent`` is that record's, and
``Tf-Trace-Index`` names the record's place in the batch, so a consumer runs that record alone in
a span whose parent is the tick (the rest of the batch runs without spans). A delivery whose
message carries no trace context runs without a span: no trace starts at a consumer.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from proto.base import Event

Enqueue = Callable[[str, Event], bool]
Publish = Callable[[str, Event], Coroutine[Any, Any, None]]

TRACER_NAME = "tradefleet"
TRACEPARENT = "traceparent"
# The index, in its micro-batch, of the one record whose trace context the message carries.
TRACE_INDEX_HEADER = "Tf-Trace-Index"


class Tracing:
    """Owns the tracer of one service; ``enabled`` guards every use on the hot path."""

    def __init__(self, service: str, mode: str = "off", otlp_endpoint: str | None = None) -> None:
        self.enabled = mode != "off"
        self.memory_exporter: InMemorySpanExporter | None = None
        self._provider: TracerProvider | None = None
        if not self.enabled:
            self.tracer: trace.Tracer = trace.NoOpTracer()
            return
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = self._exporter(mode, otlp_endpoint)
        if mode == "memory":
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        # A provider per runtime (not the global one) so tests can run several services in one process.
        self.tracer = provider.get_tracer(TRACER_NAME)

    def _exporter(self, mode: str, otlp_endpoint: str | None) -> SpanExporter:
        if mode == "console":
            return ConsoleSpanExporter()
        if mode == "memory":
            self.memory_exporter = InMemorySpanExporter()
            return self.memory_exporter
        if mode == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:  # pragma: no cover - depends on the optional extra
                raise RuntimeError(
                    "tracing=otlp needs the 'otlp' extra: pip install tradefleet[otlp]"
                ) from exc
            return OTLPSpanExporter(endpoint=otlp_endpoint) if otlp_endpoint else OTLPSpanExporter()
        raise ValueError(f"unknown tracing mode {mode!r}")

    def inject(self, headers: dict[str, str]) -> None:
        propagate.inject(headers)

    def extract(self, headers: Mapping[str, str] | None) -> otel_context.Context:
        return propagate.extract(dict(headers) if headers else {})

    def start_consumer_span(self, subject: str, headers: Mapping[str, str] | None) -> Any:
        parent = self.extract(headers)
        return self.tracer.start_as_current_span(
            f"process {subject}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        )

    def start_tick_span(self, subject: str, event: Event) -> trace.Span:
        """The root span of a sampled market-data record: a new trace, whatever is current."""
        return self.tracer.start_span(
            f"tick {subject}",
            context=otel_context.Context(),
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subject,
                "tf.event": type(event).__name__,
                "tf.ts_event": event.ts_event,
            },
        )

    def inject_span(self, span: trace.Span, headers: dict[str, str]) -> None:
        """``span``'s W3C context into ``headers`` (not the current one's)."""
        propagate.inject(headers, context=trace.set_span_in_context(span))

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()


def traced_index(headers: Mapping[str, str] | None, count: int) -> int:
    """Which record of a message of ``count`` events runs in a consumer span, child of the trace
    context the message carries (-1: none). A message without one starts no trace: traces start
    where a producer started one (a sampled tick). A lone event runs in it; in a micro-batch only
    the sampled record the producer named does."""
    if not headers or TRACEPARENT not in headers:
        return -1
    if count == 1:
        return 0
    index = headers.get(TRACE_INDEX_HEADER)
    return int(index) if index is not None and index.isdigit() else -1


class TickSampler:
    """1 market-data record in every ``every`` starts a trace of its own at the md-gateway.

    Built only when tracing is on: with it off the gateway's publish loop has no sampler at all.
    ``enqueue``/``publish`` wrap the gateway's two publish paths (the batching fast path and the
    plain publish) with a countdown; a sampled record goes through the bus's traced variant."""

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.every = every
        self._left = every
        self.sampled = 0

    def due(self) -> bool:
        self._left -= 1
        if self._left:
            return False
        self._left = self.every
        self.sampled += 1
        return True

    def enqueue(self, plain: Enqueue, traced: Enqueue) -> Enqueue:
        due = self.due

        def enqueue(subject: str, event: Event) -> bool:
            return traced(subject, event) if due() else plain(subject, event)

        return enqueue

    def publish(self, plain: Publish, traced: Publish) -> Publish:
        due = self.due

        def publish(subject: str, event: Event) -> Coroutine[Any, Any, None]:
            return traced(subject, event) if due() else plain(subject, event)

        return publish

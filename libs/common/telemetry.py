"""OpenTelemetry tracing with the W3C trace context carried in NATS headers.

Off by default: with tracing off no span is ever created on the hot path.
"""

from __future__ import annotations

from collections.abc import Mapping
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

TRACER_NAME = "tradefleet"


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

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

"""Prometheus metrics of the service runtime: per subject pattern (bounded label sets)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)


class RuntimeMetrics:
    """One registry per runtime, so several runtimes can live in one test process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("tf_events_received", "Events received", ["service", "subject"], registry=r)
        self.published = Counter(
            "tf_events_published", "Events published", ["service", "subject"], registry=r
        )
        self.dropped = Counter(
            "tf_events_dropped",
            "Messages refused or lost, by reason",
            ["service", "subject", "reason"],
            registry=r,
        )
        self.handler_errors = Counter(
            "tf_handler_errors", "Handler exceptions", ["service", "subject"], registry=r
        )
        self.latency = Histogram(
            "tf_event_latency_seconds",
            "Receive time minus the producer's ts_init, per subject pattern",
            ["service", "subject"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.connected = Gauge("tf_bus_connected", "1 while connected to NATS", ["service"], registry=r)
        self.reconnects = Counter("tf_bus_reconnects", "NATS reconnects", ["service"], registry=r)
        self.ready = Gauge("tf_ready", "1 once the service is ready", ["service"], registry=r)
        self._received: dict[str, Counter] = {}
        self._published: dict[str, Counter] = {}
        self._latency: dict[str, Histogram] = {}

    # Label children are cached: .labels() costs a few microseconds per call.
    def on_received(self, pattern: str, count: int, latency_s: float) -> None:
        child = self._received.get(pattern)
        if child is None:
            child = self._received[pattern] = self.received.labels(self.service, pattern)
            self._latency[pattern] = self.latency.labels(self.service, pattern)
        child.inc(count)
        self._latency[pattern].observe(latency_s)

    def on_published(self, pattern: str, count: int) -> None:
        child = self._published.get(pattern)
        if child is None:
            child = self._published[pattern] = self.published.labels(self.service, pattern)
        child.inc(count)

    def on_dropped(self, pattern: str, reason: str, count: int = 1) -> None:
        self.dropped.labels(self.service, pattern, reason).inc(count)

    def dropped_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for metric in self.dropped.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    reason = sample.labels["reason"]
                    out[reason] = out.get(reason, 0) + int(sample.value)
        return out

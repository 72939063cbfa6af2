"""Prometheus metrics of the service runtime, per subject pattern (bounded label sets).

Hot-path counters are plain ints and the latency histogram is a bisect over fixed bounds,
exported through a custom collector at scrape time. Why not prometheus_client's Counter and
Histogram directly: each ``inc``/``observe`` takes a lock and costs about 1 us, which on its own
was more than the 10% per-hop budget over a bare nats-py relay (bench/hop.py).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from libs.common.logging import LogOnce, get_logger

log = get_logger(__name__)

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


LATENCY_SAMPLE_EVERY = 8  # time 1 message in 8 per pattern: time_ns() costs ~165 ns on these VMs


class _Latency:
    __slots__ = ("counts", "skip", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.skip = 0


class RuntimeMetrics(Collector):
    """One registry per runtime, so several runtimes can live in one test process."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        r = self.registry
        self.received: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.latency: dict[str, _Latency] = {}
        self.dropped = Counter(
            "tf_events_dropped",
            "Messages refused or lost, by reason",
            ["service", "subject", "reason"],
            registry=r,
        )
        self.handler_errors = Counter(
            "tf_handler_errors", "Handler exceptions", ["service", "subject"], registry=r
        )
        self.connected = Gauge("tf_bus_connected", "1 while connected to NATS", ["service"], registry=r)
        self.reconnects = Counter("tf_bus_reconnects", "NATS reconnects", ["service"], registry=r)
        self.ready = Gauge("tf_ready", "1 once the service is ready", ["service"], registry=r)
        r.register(self)

    # -- hot path ---------------------------------------------------------------------------
    def on_received(self, pattern: str, count: int, ts_init: int) -> None:
        """Counts are exact; latency (receive time minus the producer's ts_init) is sampled."""
        hist = self.latency.get(pattern)
        if hist is None:
            hist = self.latency[pattern] = _Latency()
            self.received[pattern] = 0
        self.received[pattern] += count
        if hist.skip:
            hist.skip -= 1
            return
        hist.skip = LATENCY_SAMPLE_EVERY - 1
        latency_s = (time.time_ns() - ts_init) / 1e9
        hist.counts[bisect.bisect_left(LATENCY_BUCKETS, latency_s)] += 1
        hist.sum += latency_s

    def on_published(self, pattern: str, count: int) -> None:
        self.published[pattern] = self.published.get(pattern, 0) + count

    # -- cold path --------------------------------------------------------------------------
    def on_dropped(self, pattern: str, reason: str, count: int = 1) -> None:
        self.dropped.labels(self.service, pattern, reason).inc(count)

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        received = CounterMetricFamily("tf_events_received", "Events received", labels=["service", "subject"])
        for pattern, n in list(self.received.items()):
            received.add_metric([self.service, pattern], n)
        published = CounterMetricFamily(
            "tf_events_published", "Events published", labels=["service", "subject"]
        )
        for pattern, n in list(self.published.items()):
            published.add_metric([self.service, pattern], n)
        latency = HistogramMetricFamily(
            "tf_event_latency_seconds",
            "Receive time minus the producer's ts_init, per subject pattern (1 message in 8 timed)",
            labels=["service", "subject"],
        )
        for pattern, hist in list(self.latency.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS, float("inf")), hist.counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([self.service, pattern], buckets, hist.sum)
        yield received
        yield published
        yield latency

    def dropped_by_reason(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for metric in self.dropped.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    reason = sample.labels["reason"]
                    out[reason] = out.get(reason, 0) + int(sample.value)
        return out


@dataclass(frozen=True)
class Kpi:
    """One trading figure for people (P&L, a position, the risk mode...): a sample a service's
    ``kpis()`` reads off its state when Prometheus scrapes, never maintained on the hot path.

    ``kind="counter"`` for a running total (``name`` may end in ``_total``, as exposed), so that
    ``rate()`` and counter resets work as Prometheus expects; a gauge otherwise."""

    name: str
    help: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: Literal["gauge", "counter"] = "gauge"


class KpiCollector(Collector):
    """Exposes ``source()`` (an app's ``kpis()``) at scrape time, each sample labelled with the
    service like every other tf_* metric: the Prometheus job spans the whole fleet, so the
    service label is what tells risk's positions from execution's."""

    def __init__(self, service: str, source: Callable[[], Iterable[Kpi]]) -> None:
        self.service = service
        self.source = source
        self._log_once = LogOnce()

    def collect(self) -> Iterator[Metric]:
        try:
            kpis = list(self.source())
        except Exception as exc:  # a broken KPI must not take the bus metrics down with it
            if self._log_once.first("kpis", type(exc).__name__):
                log.error("kpis failed (logged once per kind)", error=repr(exc), exc_info=exc)
            return
        families: dict[str, tuple[Metric, list[str]]] = {}
        for k in kpis:
            found = families.get(k.name)
            if found is None:
                names = ["service", *sorted(n for n in k.labels if n != "service")]
                family: Metric = (
                    CounterMetricFamily(k.name, k.help, labels=names)
                    if k.kind == "counter"
                    else GaugeMetricFamily(k.name, k.help, labels=names)
                )
                found = families[k.name] = (family, names)
            family, names = found
            values = [self.service, *(str(k.labels.get(n, "")) for n in names[1:])]
            family.add_metric(values, float(k.value))  # type: ignore[attr-defined]
        for family, _ in families.values():
            yield family

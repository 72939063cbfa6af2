"""One OpenTelemetry trace from a sampled tick to its fill, through the real services on a real
NATS: the md-gateway's micro-batches carry the sampled record's context (Tf-Trace-Index), features
hands it to the bar the tick falls in, and every hop after (fastlane, qos, risk, execution) stays
in that trace up to the simulated venue's fill."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan

from libs.common.config import Settings, load_settings
from libs.common.localinfra import start_nats
from libs.common.runtime import Runtime, ServiceApp
from services.features.runtime import FeaturesApp
from tests.conftest import REPO, SAMPLE_LEAN
from tests.helpers import SHARED_CACHES, await_until
from tests.kit.stubs import TEST_APPROVAL_KEY
from tradefleet.services import RUNNABLE

# Consumers first, the gateway last (as `tradefleet up` starts them): nothing it sends goes unheard.
CHAIN = ("features", "fastlane", "qos", "risk", "execution")
SAMPLE_EVERY = 25


def _settings(nats_url: str, tmp: Path) -> Settings:
    return load_settings(
        None,
        nats={"url": nats_url},
        http={"port": -1},
        telemetry={"tracing": "memory", "trace_sample_every": SAMPLE_EVERY, "heartbeat_s": 0},
        # Paced: every service here shares one event loop with the gateway, so an unpaced replay
        # reaches its end before the orders it causes reach the simulated venue (each approval
        # waits for the stream to take the gate's state first), which then rejects them. At 300x
        # (10 s for the 50 minutes) a loaded CI run's approvals all came after the end; at 100x
        # the replay lasts 30 s.
        md_gateway={"replay": {"root": str(SAMPLE_LEAN), "news": [], "until": "10:20", "speed": 100}},
        execution={"journal": str(tmp / "journal.msgpack"), "account": f"SIM-{uuid.uuid4().hex[:6]}"},
        fastlane={"compile_cache": SHARED_CACHES["TRADEFLEET_FASTLANE__COMPILE_CACHE"]},
        market={"cache": SHARED_CACHES["TRADEFLEET_MARKET__CACHE"]},
        signing={"approval_key": TEST_APPROVAL_KEY},
        # Quote age is judged in market time: at 100x a quote the gate heard 60 ms (wall) before
        # the intent is 6 s old, and a loaded CI run lags that much. This test is about traces.
        risk={"max_quote_age_ms": 120000},
    )


async def _start(name: str, settings: Settings) -> tuple[Runtime, ServiceApp, asyncio.Task[int]]:
    rt = Runtime(name, settings, batching=name == "md-gateway")
    app = RUNNABLE[name](settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    await await_until(lambda: rt.ready or task.done(), 120, what=f"{name} ready")
    assert not task.done(), task.exception() if task.done() else None
    return rt, app, task


def _path_to_root(span: ReadableSpan, by_id: dict[int, tuple[str, ReadableSpan]]) -> list[tuple[str, str]]:
    """(service, span name) from ``span`` up to its trace's root, across every service's spans."""
    path = []
    current: ReadableSpan | None = span
    while current is not None:
        service = by_id[current.context.span_id][0]
        path.append((service, current.name))
        parent = current.parent
        current = by_id[parent.span_id][1] if parent is not None and parent.span_id in by_id else None
        if parent is not None and current is None:
            path.append(("?", f"missing parent {parent.span_id:x}"))
    return path


def _batch_size(tick: ReadableSpan) -> int:
    size = (tick.attributes or {}).get("tf.batch_size")
    return size if isinstance(size, int) else 0


def _services(path: Sequence[tuple[str, str]]) -> list[str]:
    """The services a path passes through, root first, each once."""
    out: list[str] = []
    for service, _ in reversed(path):
        if not out or out[-1] != service:
            out.append(service)
    return out


async def test_a_sampled_tick_is_one_trace_through_every_service_to_its_fill(tmp_path: Path) -> None:
    assert (REPO / "models" / "registry").exists()
    server = start_nats(tmp_path / "nats")  # a JetStream of its own: no other test's orders or positions
    settings = _settings(server.url, tmp_path)
    started: list[tuple[Runtime, ServiceApp, asyncio.Task[int]]] = []
    try:
        for name in CHAIN:
            started.append(await _start(name, settings))
        started.append(await _start("md-gateway", settings))
        gateway, features = started[-1][1], started[0][1]
        assert isinstance(features, FeaturesApp)

        def collect() -> tuple[dict[int, tuple[str, ReadableSpan]], dict[str, list[ReadableSpan]]]:
            by_id: dict[int, tuple[str, ReadableSpan]] = {}
            spans: dict[str, list[ReadableSpan]] = {}
            for rt, _, _ in started:
                assert rt.tracing.memory_exporter is not None
                spans[rt.service] = list(rt.tracing.memory_exporter.get_finished_spans())
                by_id.update({s.context.span_id: (rt.service, s) for s in spans[rt.service]})
            return by_id, spans

        def whole_fill() -> bool:
            by_id, spans = collect()
            fills = [s for s in spans["execution"] if s.name == "broker fill"]
            return any(_services(_path_to_root(f, by_id)) == ["md-gateway", *CHAIN] for f in fills)

        # The replay runs to 10:20 in 30 s; a fill traced to a tick comes within it.
        await await_until(lambda: features.finished, 150, what="features through the replay")
        try:
            await await_until(whole_fill, 120, interval=0.5, what="a fill traced back to a tick")
        except AssertionError as e:  # say why: the gate's and the venue's own account
            raise AssertionError(
                f"{e}; risk: {started[3][1].status()}; execution: {started[4][1].status()}"
            ) from e
        by_id, spans = collect()

        # Sampling happened at the gateway; at features only the sampled records run in spans (none
        # for the rest of a batch, none for a message without a trace), each a child of its tick,
        # and the ticks that rode inside a batch of several records reached it too.
        assert gateway.status()["traced_records"] > 0
        ticks = {s.context.span_id: s for s in spans["md-gateway"] if s.name.startswith("tick md.")}
        assert ticks and all(s.parent is None for s in ticks.values())
        received = sum(features.received.values())
        md_spans = [s for s in spans["features"] if s.name.startswith("process md.")]
        assert 0 < len(md_spans) <= len(ticks) < received // (SAMPLE_EVERY // 2)
        assert all(s.parent is not None and s.parent.span_id in ticks for s in md_spans)
        in_batches = {i for i, s in ticks.items() if _batch_size(s) > 1}
        reached = {s.parent.span_id for s in md_spans if s.parent is not None} & in_batches
        assert len(in_batches) > len(ticks) // 2 and len(reached) >= 0.9 * len(in_batches)

        # A fill whose trace runs back through every service to a tick, with nothing missing.
        fills = [s for s in spans["execution"] if s.name == "broker fill"]
        assert fills, sorted({s.name for s in spans["execution"]})
        paths = [_path_to_root(f, by_id) for f in fills]
        whole = [p for p in paths if _services(p) == ["md-gateway", *CHAIN]]
        assert whole, "no fill traced back to a tick:\n" + "\n".join(map(str, paths))
        names = [name for _, name in reversed(whole[0])]
        assert names[0].startswith("tick md.") and names[1].startswith("process md.")
        assert names[2].startswith("bar close ") and names[3].startswith("process feat.1m.")
        assert names[4].startswith("process sig.fast.") and names[5].startswith("process order.intent.")
        assert names[6].startswith("process order.approved.") and names[-1] == "broker fill"
        trace_id = fills[paths.index(whole[0])].context.trace_id
        assert {svc for svc, s in by_id.values() if s.context.trace_id == trace_id} == {"md-gateway", *CHAIN}
    finally:
        for rt, _, _ in reversed(started):
            rt.request_stop()
        for _, _, task in reversed(started):
            await asyncio.wait_for(task, 30)
        server.stop()

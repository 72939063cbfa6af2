"""features runtime: md.* in, through the core, feat.TF.SYM out; latest vectors to Redis behind."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import time
from collections.abc import Awaitable
from typing import Any

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import trace

from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.clock import LiveClock
from libs.common.config import Settings
from libs.common.logging import LogOnce, get_logger
from libs.common.nats_bus import NatsBus
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from libs.common.telemetry import TRACEPARENT
from proto.control import Progress
from proto.features import MICRO_FEATURE_SET, MICRO_TIMEFRAME, MICRO_VECTOR, FeatureVector
from proto.market import PUBLISHED_PREFIX, SEQ_MASK, DepthUpdate, FeedStatus, Quote, Trade
from proto.subjects import subject_token
from services.features.core import FeatureCore

log = get_logger(__name__)
# features.checkpoint: how often the state is noted (wall time), and the note's layout version.
CHECKPOINT_EVERY_S = 2.0
CHECKPOINT_VERSION = 1
KIND_OF: dict[type, str] = {Quote: "quotes", Trade: "trades", DepthUpdate: "depth"}
MD_KINDS = tuple(KIND_OF.values())
REDIS_PREFIX = "tradefleet:feat"


class RedisHotState:
    """Write-behind of the latest vector per (symbol, timeframe): a dict updated on the hot path,
    flushed in one pipeline on a timer. Nothing here is ever read back by the service."""

    def __init__(self, url: str, flush_ms: int, ttl_s: int, names: dict[str, list[str]]) -> None:
        import redis.asyncio as redis

        # Dashboards read field names, not the wire's positional arrays: each value is stored as
        # a JSON object with the feature names of its set.
        self.names = names

        self.client = redis.from_url(url)
        self.flush_s = flush_ms / 1000
        self.ttl_s = ttl_s
        self.latest: dict[str, FeatureVector] = {}
        self.written = 0
        self.errors = 0
        self._log_once = LogOnce()
        self._encoder = msgspec.json.Encoder()

    def put(self, vector: FeatureVector) -> None:
        self.latest[f"{REDIS_PREFIX}:{vector.symbol}:{vector.timeframe}"] = vector

    async def flush(self) -> None:
        if not self.latest:
            return
        batch, self.latest = self.latest, {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, vector in batch.items():
                record = msgspec.structs.asdict(vector)
                record["names"] = vector.names or self.names.get(vector.feature_set)
                pipe.set(key, self._encoder.encode(record), ex=self.ttl_s)
            await pipe.execute()
            self.written += len(batch)
        except Exception as exc:  # Redis is a convenience: its outage must never stop features
            self.errors += 1
            for key, vector in batch.items():
                self.latest.setdefault(key, vector)
            if self._log_once.first("redis"):
                log.warning("redis hot state unavailable (vectors still published)", error=repr(exc))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        await self.client.aclose()


class FeaturesApp(ServiceApp):
    name = "features"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        # The runtime's clock replaces this one in start(); vectors built before then are none.
        self.core = FeatureCore(settings.features, LiveClock(), market_calendar(settings.market))
        self.received: collections.Counter[str] = collections.Counter()
        self.vectors: collections.Counter[str] = collections.Counter()
        self.redis: RedisHotState | None = None
        self.finished = False
        self._tasks: list[asyncio.Task[None]] = []
        p = settings.partition
        self.owns = Partitioner(p.count, p.owned).owns
        self.index_symbol = settings.features.index_symbol
        self.other_partition = 0
        self.kept = 0  # market-data events of its own symbols (and the index) taken
        # Started after the replay had begun (a restart): what was published before can never
        # come, so the end of the replay does not wait for the day's count.
        self.joined_late = False
        self.last_vector_ns = 0  # the latest vector's event time: the heartbeat's progress
        self._noted_at = time.monotonic()  # the last checkpoint (features.checkpoint)
        self.checkpoints = 0
        self.resumed_from_ns = 0  # market time of the checkpoint a restart resumed from
        # Tracing on only: symbol -> (end of the open bar a sampled tick fell in, its context).
        self._bar_traces: dict[str, tuple[int, otel_context.Context]] = {}

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self._resume()
        self.core.clock = rt.clock
        f = self.settings.features
        if f.redis_url:
            names = {
                self.core.feature_set: list(self.core.names),
                MICRO_FEATURE_SET: list(MICRO_VECTOR),
            }
            self.redis = RedisHotState(f.redis_url, f.redis_flush_ms, f.redis_ttl_s, names)
            self._tasks.append(asyncio.create_task(self.redis.run(), name="redis-hot-state"))
        # One subscription for every md subject: NATS keeps one subscription's messages in the
        # publisher's order, and bars close on event time, so quotes and trades must not be
        # delivered by separate tasks that can overtake each other.
        traced = rt.tracing.enabled
        on_md = self._on_md_traced if traced else self._on_md  # off: nothing added
        await rt.subscribe("md.>", on_md, sync=not traced, types=(Quote, Trade, DepthUpdate, FeedStatus))
        if isinstance(rt.bus, NatsBus) and rt.bus.owned is not None and not self.owns(self.index_symbol):
            # The server sends a replica its own partitions only; every replica needs the index's
            # bars (relative strength), so those come on a subscription of their own. Its order
            # against this replica's symbols is kept per message, not per tick: a bar of the
            # index closes on its own ticks.
            index = subject_token(self.index_symbol)
            for kind in (Quote, Trade):
                index_subject = f"md.{kind.__name__.lower()}.{index}"
                await rt.subscribe(index_subject, on_md, sync=not traced, types=kind, every_partition=True)
        if f.close_on_wall_clock:
            self._tasks.append(asyncio.create_task(self._wall_clock(), name="bar-timer"))

    # -- checkpoint --------------------------------------------------------------------------------
    def _resume(self) -> None:
        """The state noted by an earlier run of this process (features.checkpoint), if any: its
        bars, VWAP and windows go on from there; only the ticks published between that note and
        this start are missing (the joined_late path still applies)."""
        path = self.settings.features.checkpoint
        if path is None or not path.exists():
            return
        try:
            note = pickle.loads(path.read_bytes())  # this service's own state file (see features.checkpoint)
            if note.get("version") != CHECKPOINT_VERSION or note["feature_set"] != self.core.feature_set:
                log.warning("features checkpoint of another build or feature set: starting afresh")
                return
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, KeyError, TypeError) as exc:
            log.error("features checkpoint unreadable: starting afresh", error=repr(exc)[:300])
            return
        self.core = note["core"]
        self.vectors.update(note["vectors"])
        self.resumed_from_ns = note["market_ns"]
        log.warning("features resumed from its checkpoint", market_ns=note["market_ns"])

    def _note(self, market_ns: int) -> None:
        """The state, noted at most every CHECKPOINT_EVERY_S (a pickle of the core: a few ms at a
        day's size), in a file replaced atomically."""
        path = self.settings.features.checkpoint
        now = time.monotonic()
        if path is None or now - self._noted_at < CHECKPOINT_EVERY_S:
            return
        self._noted_at = now
        clock, self.core.clock = self.core.clock, LiveClock()  # the runtime's is not ours to save
        try:
            note = {
                "version": CHECKPOINT_VERSION,
                "feature_set": self.core.feature_set,
                "core": self.core,
                "vectors": dict(self.vectors),
                "market_ns": market_ns,
                "saved_at": time.time(),
            }
            blob = pickle.dumps(note, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            self.core.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        self.checkpoints += 1

    def _on_md(self, d: Delivery[Quote | Trade | DepthUpdate | FeedStatus]) -> Awaitable[None] | None:
        """Per tick (sync): a coroutine only when the tick closes bars (or for a status)."""
        e = d.event
        if type(e) is not FeedStatus:
            self.received[KIND_OF[type(e)]] += 1
            symbol = e.symbol
            # Another replica's symbol: skipped, except the index, whose bars every replica needs
            # for relative strength (its vectors are published by its owner only).
            if not self.owns(symbol) and symbol != self.index_symbol:
                self.other_partition += 1
                return None
            if not self.kept and getattr(e, "seq", 0) & SEQ_MASK > 1:
                self.joined_late = True  # its source had numbered ticks before this process began
            self.kept += 1
            vectors = self.core.on_event(e)
            return self._publish_closed(vectors, e.ts_event) if vectors else None
        return self._on_status(e)

    async def _publish_closed(self, vectors: list[FeatureVector], market_ns: int) -> None:
        await self._publish(vectors)
        self._note(market_ns)  # at a bar's close: the state is whole there

    async def _on_md_awaited(self, d: Delivery[Quote | Trade | DepthUpdate | FeedStatus]) -> None:
        pending = self._on_md(d)
        if pending is not None:
            await pending

    async def _on_md_traced(self, d: Delivery[Quote | Trade | DepthUpdate | FeedStatus]) -> None:
        """``_on_md`` with tracing on. What a trace means here: the record the md-gateway sampled
        (in a batch it alone runs in a consumer span, child of the gateway's tick span) hands its
        trace to the base bar it falls in. When that bar closes (on a later record of any symbol,
        the wall-clock timer or the end of the replay), the bar's vectors of the tick's symbol
        (every timeframe closing there) are published in a "bar close" span, child of the tick's
        span and linked to the delivery that closed the bar; predictions, scores, intents,
        approvals, orders and fills follow them in the same trace. What the sampled record itself
        closes (the bars before it, the 1-second vectors) is published outside its trace. A bar
        keeps the first sampled tick of its symbol (later ones end here), and one that closes
        without a vector of that symbol (no trade in it) ends its trace here too."""
        e = d.event
        span = trace.get_current_span()
        if type(e) is FeedStatus or not span.is_recording() or TRACEPARENT not in (d.headers or {}):
            await self._on_md_awaited(d)  # not a sampled record
            return
        token = otel_context.attach(otel_context.Context())  # its own closes: outside its trace
        try:
            await self._on_md_awaited(d)
        finally:
            otel_context.detach(token)
        bar_end = self.core.next_base
        if bar_end and e.symbol not in self._bar_traces and self.owns(e.symbol):
            self._bar_traces[e.symbol] = (bar_end, trace.set_span_in_context(span))
            span.set_attribute("tf.bar_end_ns", bar_end)

    async def _publish(self, vectors: list[FeatureVector]) -> None:
        if self._bar_traces:  # tracing on and a sampled tick's bar open: a look per close, not per tick
            await self._publish_traced(vectors)
            return
        for v in vectors:
            await self._emit_vector(v)

    async def _emit_vector(self, v: FeatureVector) -> None:
        if not self.owns(v.symbol):
            return
        await self.rt.emit(v)
        self.vectors[v.timeframe] += 1
        self.last_vector_ns = v.ts_event
        if self.redis is not None:
            self.redis.put(v)

    async def _publish_traced(self, vectors: list[FeatureVector]) -> None:
        """Vectors in their order; those of a bar a sampled tick fell in inside its trace."""
        traces = self._bar_traces
        closer = trace.get_current_span().get_span_context()  # what closed the bar, if traced
        spans: dict[str, trace.Span] = {}
        closed = 0
        try:
            for v in vectors:
                entry = None if v.timeframe == MICRO_TIMEFRAME else traces.get(v.symbol)
                if v.timeframe != MICRO_TIMEFRAME:
                    closed = max(closed, v.ts_event)
                if entry is None or entry[0] != v.ts_event or not self.owns(v.symbol):
                    await self._emit_vector(v)
                    continue
                span = spans.get(v.symbol)
                if span is None:
                    span = spans[v.symbol] = self.rt.tracing.tracer.start_span(
                        f"bar close {v.symbol}",
                        context=entry[1],
                        links=[trace.Link(closer)] if closer.is_valid else None,
                        attributes={"tf.symbol": v.symbol, "tf.bar_end_ns": v.ts_event},
                    )
                with trace.use_span(span):
                    await self._emit_vector(v)
        finally:
            for span in spans.values():
                span.end()
        # Every bar ending by this close has closed: a sampled tick whose bar made no vector of
        # its symbol ends its trace at features.
        for symbol in [s for s, (end, _) in traces.items() if end <= closed]:
            del traces[symbol]

    async def _on_status(self, status: FeedStatus) -> None:
        if status.state != "replay_finished":
            return
        # The gateway flushes its ticks before it says finished, and one subscription keeps that
        # order; the bounded wait below only guards against a lost core message.
        expected, received = self._expected(status), lambda: self.kept
        if self.joined_late:
            log.warning(
                "replay finished; this process joined it late (a restart)", expected=expected, kept=self.kept
            )
            expected = 0
        elif expected is None:  # a gateway that does not count per symbol: every event, every kind
            expected = sum(int(status.counters.get(k, 0)) for k in MD_KINDS)
            received = lambda: sum(self.received.values())  # noqa: E731
        for _ in range(300):
            if received() >= expected:
                break
            await asyncio.sleep(0.05)
        else:
            log.warning("replay finished but ticks are missing", expected=expected, received=received())
        await self._publish(self.core.finish())
        self.finished = True
        log.info("replay features finished", vectors=dict(self.vectors))

    def _expected(self, status: FeedStatus) -> int | None:
        """What this replica keeps of what the replay published: its own symbols' events and the
        index's (a replica on a partitioned server receives nothing else)."""
        counts = {
            k[len(PUBLISHED_PREFIX) :]: n
            for k, n in status.counters.items()
            if k.startswith(PUBLISHED_PREFIX)
        }
        if not counts:
            return None
        return sum(int(n) for s, n in counts.items() if self.owns(s) or s == self.index_symbol)

    async def _wall_clock(self) -> None:
        grace = self.settings.features.wall_clock_grace_ms * 1_000_000
        while True:
            await asyncio.sleep(0.1)
            vectors = self.core.on_time(self.rt.now_ns() - grace)
            if vectors:
                await self._publish(vectors)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.redis is not None:
            await self.redis.close()

    def progress(self) -> Progress:
        """When its latest vector closed: the alerts service knows the first bar of the session
        closed and tells a features service that makes nothing from one that is fine."""
        return Progress(last_vector_ns=self.last_vector_ns)

    def status(self) -> dict[str, Any]:
        return {
            "feature_set": self.core.feature_set,
            "received": dict(self.received),
            "vectors": dict(self.vectors),
            "symbols": len(self.core.symbols),
            "other_partition": self.other_partition,
            "owned_symbols": sorted(sym for sym in self.core.symbols if self.owns(sym)),
            "finished": self.finished,
            "core": dict(self.core.stats),
            "redis": None
            if self.redis is None
            else {"written": self.redis.written, "errors": self.redis.errors},
        }

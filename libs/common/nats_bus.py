"""The Bus on NATS: core subjects for market data, JetStream for everything durable.

- core: fire-and-forget, optional per-subject micro-batching (one message carries many events);
- JetStream: ``Nats-Msg-Id`` from the event's dedupe key so a republish after a crash is dropped
  by the stream; pull consumers with durable names and explicit acks;
- every received message is decoded here: what cannot be decoded, what the catalog does not
  carry on its subject, a batch on a durable subject and an event stamped far in the future go
  to the runtime's ``on_dropped`` hook (counted, logged once, dead-lettered) and the subscription
  keeps running; so does an event whose handler fails (a durable one after its retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api as js_api
from opentelemetry import trace

from libs.common import codec, natspub
from libs.common.bus import (
    Bus,
    BusHooks,
    Delivery,
    Handler,
    NullHooks,
    Responder,
    Subscription,
    Types,
    checked_service_subject,
    checked_spec,
    wanted_types,
)
from libs.common.config import NatsSettings
from libs.common.group import ORIGIN_HEADER, LocalSubscription, ProcessGroup
from libs.common.logging import get_logger
from libs.common.telemetry import TRACE_INDEX_HEADER, Tracing, traced_index
from proto import SCHEMA_VERSION
from proto.base import DurableEvent, Event
from proto.events import Batch
from proto.subjects import (
    PARTITIONS_PROBE,
    STREAMS,
    StreamSpec,
    SubjectSpec,
    Transport,
    partitioned_patterns,
    resolve,
    stream_of_pattern,
    unmapped,
)

log = get_logger(__name__)

SCHEMA_HEADER = "Tf-Schema"
# Pending limits of a core subscription: beyond them nats-py drops (counted as slow_consumer).
CORE_PENDING_MSGS = 1_000_000
CORE_PENDING_BYTES = 512 * 1024 * 1024
MAX_HANDLER_ATTEMPTS = 5
# An event stamped (ts_event or ts_init) more than this ahead of the wall clock is refused
# (far_timestamp): nothing has happened in the future, and a stamp in 2100 or near 2**63 would
# move a consumer's event-time clock (bars, ages, expiries) where nothing real ever follows.
# Generous beyond any clock skew between hosts; a replay's stamps lie in the past. The past is
# not checked here: replays and late reports are old on purpose, and each core judges an age.
FAR_FUTURE_NS = 24 * 3600 * 10**9
HANDLER_FAILED = "handler_failed"
CORE_PUBLISH_FAILURES = (
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionClosedError,
)

# An event whose fields make a subject NATS cannot carry (a symbol with a tab in it, or empty) is
# refused at the publisher (counted, dead-lettered) and the publish returns: raising would fail
# the handler that made it, and with it whatever else that handler had to send (a bar close's
# other symbols), or hold it in a retry queue forever.
UNROUTABLE = "unroutable"
_NOT_IN_A_TOKEN = re.compile(r"[\s*>]")


def routable(subject: str) -> bool:
    """Can NATS carry a publish on ``subject``: no empty token, no whitespace, no wildcard?"""
    return all(token and not _NOT_IN_A_TOKEN.search(token) for token in subject.split("."))


class Unroutable(ValueError):
    """A subject made of an event's fields that NATS cannot carry (see ``routable``)."""


async def server_partitions(nc: NatsClient) -> int:
    """How many partitions the server maps symbol-keyed subjects to: it maps the probe subject
    to PARTITIONS_PROBE.N (proto.subjects.partition_mappings); unmapped, the probe comes back as
    it is. A client that hears nothing (a foreign server config, no permission) takes 1 and says
    so; a partitioned replica then refuses to start (Runtime)."""
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    nonce = os.urandom(8).hex().encode()

    async def on_probe(msg: Msg) -> None:
        if msg.data == nonce and not heard.done():
            heard.set_result(msg.subject)

    subs: list[Any] = []
    try:
        subs += [await nc.subscribe(s, cb=on_probe) for s in (PARTITIONS_PROBE, f"{PARTITIONS_PROBE}.*")]
        await nc.publish(PARTITIONS_PROBE, nonce)
        subject = await asyncio.wait_for(heard, 5.0)
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("no answer to the partition probe: taking no partitions", error=repr(exc))
        return 1
    finally:
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
    count = subject.rpartition(".")[2]
    return int(count) if subject != PARTITIONS_PROBE and count.isdigit() else 1


def connect_options(settings: NatsSettings, name: str, callbacks: Any) -> dict[str, Any]:
    """nats.connect's arguments for a client named ``name``, whose ``callbacks`` (a NatsBus, or a
    process group that tells its members) hear of errors, disconnects and reconnects."""
    return {
        "servers": [s.strip() for s in settings.url.split(",")],
        "name": name,
        "connect_timeout": settings.connect_timeout_s,
        "reconnect_time_wait": settings.reconnect_wait_s,
        "max_reconnect_attempts": settings.max_reconnect_attempts,
        "allow_reconnect": True,
        "error_cb": callbacks._on_error,
        "disconnected_cb": callbacks._on_disconnected,
        "reconnected_cb": callbacks._on_reconnected,
        "closed_cb": callbacks._on_closed,
        "drain_timeout": 10,
        "nkeys_seed": str(settings.nkey_seed_file) if settings.nkey_seed_file else None,
        "tls": settings.tls_context(),
    }


class PublishFailed(RuntimeError):
    """A durable publish that JetStream did not acknowledge after every retry: the outcome is
    unknown (it may still be stored), so callers treat it as unresolved, never as 'not sent'."""


class NatsBus(Bus):
    def __init__(
        self,
        settings: NatsSettings,
        service: str,
        hooks: BusHooks | None = None,
        tracing: Tracing | None = None,
        batching: bool = False,
        group: ProcessGroup | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.hooks: BusHooks = hooks or NullHooks()
        self.tracing = tracing
        # In a process group, each event is published at once (its members take it in-process
        # as it is published, not a micro-batch later).
        self.batching = batching and group is None
        self.group = group
        self.nc: NatsClient | None = None
        self.js: Any = None
        # Micro-batches as runs of consecutive events on one subject, in publish order: a
        # consumer of several subjects (features reads quotes and trades of a symbol through one
        # md.> subscription) sees exactly the order the producer published in. Per-subject
        # batches would let a symbol's quotes run minutes of event time ahead of its trades.
        self._runs: list[tuple[str, list[Event]]] = []
        self._pending = 0
        # Sampled records waiting in the runs (tracing on only): run index -> (index of the
        # record in its run, its root span). One per run: its message's traceparent is that one's.
        self._traced: dict[int, tuple[int, Any]] = {}
        self._flush_lock = asyncio.Lock()
        # subject -> catalog entry, for publishing and receiving alike (looked up per message)
        self._routes: dict[str, SubjectSpec] = {}
        self._linger_task: asyncio.Task[None] | None = None
        self._pull_tasks: list[asyncio.Task[None]] = []
        self._pull_subs: list[Any] = []
        # For lockstep replays (quiet()): messages being handled, handled so far, events sent.
        self.in_hand = 0
        self.handled = 0
        self.sent = 0
        self._core_subs: list[Any] = []
        self._durables: list[tuple[str, str]] = []
        self._closing = False
        self._base_headers = {SCHEMA_HEADER: str(SCHEMA_VERSION)}
        if group is not None:  # its members drop their own group's copies coming back
            self._base_headers[ORIGIN_HEADER] = group.origin
        self._header_block: bytes | None = None  # set at connect
        self.connected = asyncio.Event()
        self.on_connection_change: Any = None
        # The server's partition count (PARTITIONS_PROBE, asked at connect; 1: no mapping) and,
        # for a replica of a partitioned service, the partitions it owns (None: all of them).
        self.partitions = 1
        self.owned: frozenset[int] | None = None
        # Enqueued events refused as unroutable (enqueue cannot await): reported at the flush.
        self._unroutable: list[tuple[str, Event, str]] = []
        # Stamps above this are checked against the wall clock (_far): one comparison per event
        # on the hot path, and the clock read only when one exceeds it (it is then moved up).
        self._ts_ceiling = time.time_ns() + FAR_FUTURE_NS

    # -- connection -------------------------------------------------------------------------
    async def connect(self) -> None:
        if self.group is not None:
            await self.group.join(self)  # the group's one connection (libs/common/group.py)
            return
        nc = await nats.connect(**connect_options(self.settings, self.service, self))
        await self.connected_on(nc, await server_partitions(nc))

    async def connected_on(self, nc: NatsClient, partitions: int) -> None:
        """Use ``nc`` (this bus's own, or its process group's shared one)."""
        self.nc = nc
        # The header block, encoded once (libs/common/natspub.py): only while every message
        # carries the same headers (tracing adds a context per message) and the client is one
        # whose internals natspub drives.
        tracing = self.tracing is not None and self.tracing.enabled
        self._header_block = (
            natspub.encode_headers(self._base_headers) if natspub.supported(nc) and not tracing else None
        )
        self.js = nc.jetstream(timeout=5.0, domain=self.settings.js_domain)
        self.partitions = partitions
        self.connected.set()
        if self.batching and self.settings.batch_linger_ms > 0:
            self._linger_task = asyncio.create_task(self._linger_loop(), name="bus-linger")

    def max_payload(self) -> int:
        """The largest message the server takes (its INFO; NATS's default before connecting)."""
        return self.nc.max_payload if self.nc is not None else 1024 * 1024

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            await self.hooks.on_dropped(exc.subject, "slow_consumer", str(exc), b"", None)
            return
        log.warning("nats error", error=repr(exc))

    async def _on_disconnected(self) -> None:
        self.connected.clear()
        log.warning("nats disconnected")
        if self.on_connection_change:
            self.on_connection_change(False)

    async def _on_reconnected(self) -> None:
        self.connected.set()
        log.info(
            "nats reconnected",
            url=str(self.nc.connected_url.netloc) if self.nc and self.nc.connected_url else "",
        )
        if self.on_connection_change:
            self.on_connection_change(True)

    async def _on_closed(self) -> None:
        self.connected.clear()

    async def ensure_streams(self, streams: tuple[StreamSpec, ...] = STREAMS) -> None:
        """Create or update every JetStream stream of the catalog (idempotent)."""
        for st in streams:
            config = js_api.StreamConfig(
                name=st.name,
                subjects=list(st.subjects),
                max_age=float(st.max_age_s),
                max_bytes=st.max_bytes,
                discard=js_api.DiscardPolicy.NEW if st.discard == "new" else js_api.DiscardPolicy.OLD,
                num_replicas=self.settings.stream_replicas,
                duplicate_window=float(st.duplicate_window_s),
                storage=js_api.StorageType.FILE if st.storage == "file" else js_api.StorageType.MEMORY,
                retention=js_api.RetentionPolicy.LIMITS,
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self.js.update_stream(config)

    async def missing_streams(self, streams: tuple[StreamSpec, ...] = STREAMS) -> list[str]:
        """The catalog's streams the server does not have (a secured service checks, never creates)."""
        missing = []
        for st in streams:
            try:
                await self.js.stream_info(st.name)
            except nats.js.errors.NotFoundError:
                missing.append(st.name)
        return missing

    # -- publish ----------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        if self.tracing is None or not self.tracing.enabled:
            return self._base_headers  # shared and never mutated: no copy per message
        headers = dict(self._base_headers)
        self.tracing.inject(headers)
        return headers

    def _route(self, subject: str, event: Event) -> SubjectSpec:
        """The catalog entry for a publish, checked once per subject and event type (raises
        Unroutable for a subject NATS cannot carry; UnknownSubject outside the catalog)."""
        route = self._routes.get(subject)
        if route is None or type(event) not in route.event_types:
            route = checked_spec(subject, event)
            if not routable(subject):
                raise Unroutable(f"{type(event).__name__} cannot be published on {subject!r}")
            self._routes[subject] = route
        return route

    async def _refuse(self, subject: str, event: Event, why: str) -> None:
        await self.hooks.on_dropped(subject, UNROUTABLE, why, codec.encode(event), None)

    async def publish(self, subject: str, event: Event) -> None:
        # The core path stays one coroutine deep (each level costs ~0.4 us; bench/hop.py).
        try:
            route = self._route(subject, event)
        except Unroutable as exc:
            await self._refuse(subject, event, str(exc))
            return
        if self.group is not None:
            await self.group.publish(self, subject, event, route)
        elif route.transport is Transport.JETSTREAM:
            assert isinstance(event, DurableEvent)
            await self.publish_durable_now(subject, route.stream, event)
        elif self.batching:
            if self.enqueue(subject, event):
                await self.flush()
        else:
            assert self.nc is not None
            try:
                if self._header_block is not None:
                    await natspub.publish_encoded(self.nc, subject, codec.encode(event), self._header_block)
                else:
                    await self.nc.publish(subject, codec.encode(event), headers=self._headers())
            except CORE_PUBLISH_FAILURES as exc:
                await self._dropped_while_down(subject, 1, exc)
                return
            self.sent += 1
            self.hooks.on_published(route.wildcard, 1)

    async def publish_durable_now(self, subject: str, stream: str | None, event: DurableEvent) -> None:
        """Publish and wait for the stream's acknowledgement (retried; PublishFailed without)."""
        await self._publish_durable(subject, stream, event)
        self.sent += 1
        self.hooks.on_published(self._routes[subject].wildcard, 1)

    async def publish_durable_deferred(
        self, subject: str, stream: str | None, event: DurableEvent
    ) -> asyncio.Future[Any]:
        """Write a durable publish on the connection now; its acknowledgement is the returned
        future's (a process group awaits it before acking what caused it: libs/common/group.py)."""
        headers = dict(self._headers())
        headers["Nats-Msg-Id"] = event.dedupe_key()
        try:
            ack: asyncio.Future[Any] = await self.js.publish_async(
                subject, codec.encode(event), stream=stream, headers=headers
            )
        except CORE_PUBLISH_FAILURES as exc:  # not written: the group publishes it again
            ack = asyncio.get_running_loop().create_future()
            ack.set_exception(exc)
        self.sent += 1
        self.hooks.on_published(self._routes[subject].wildcard, 1)
        return ack

    async def publish_core_now(self, subject: str, pattern: str, event: Event) -> None:
        """One core event, unbatched (a process group's members take each as it is published)."""
        await self._publish_core(subject, pattern, codec.encode(event))

    async def _publish_durable(self, subject: str, stream: str | None, event: DurableEvent) -> None:
        payload = codec.encode(event)
        msg_id = event.dedupe_key()
        delay = 0.05
        for attempt in range(self.settings.publish_retries + 1):
            headers = dict(self._headers())  # js.publish adds its own headers to the dict
            headers["Nats-Msg-Id"] = msg_id
            try:
                await self.js.publish(subject, payload, stream=stream, headers=headers)
                return
            except (
                nats.errors.TimeoutError,
                nats.js.errors.NoStreamResponseError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError,
            ) as exc:
                # Same Nats-Msg-Id on every retry: the stream keeps exactly one copy.
                log.warning("durable publish retry", subject=subject, attempt=attempt, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise PublishFailed(f"no JetStream ack for {subject} msg_id={msg_id}")

    def enqueue(self, subject: str, event: Event) -> bool:
        """Batching fast path for core subjects, without a coroutine per event (the replay
        publishes hundreds of thousands per second). True when ``batch_max`` events wait: the
        caller then awaits ``flush`` (which also reports an event refused as unroutable)."""
        try:
            route = self._route(subject, event)
        except Unroutable as exc:
            self._unroutable.append((subject, event, str(exc)))
            return True
        if route.transport is not Transport.CORE:
            raise ValueError(f"enqueue is for core subjects; {subject} is durable")
        runs = self._runs
        if runs and runs[-1][0] == subject:
            runs[-1][1].append(event)
        else:
            runs.append((subject, [event]))
        self._pending += 1
        return self._pending >= self.settings.batch_max

    def enqueue_traced(self, subject: str, event: Event) -> bool:
        """``enqueue`` for a sampled record (md-gateway's TickSampler): it starts a trace of its
        own, whose context its micro-batch carries (``traceparent`` and ``Tf-Trace-Index``). A
        run already carrying one keeps it: this record then goes untraced."""
        full = self.enqueue(subject, event)
        run = len(self._runs) - 1
        if run < 0 or not self._runs[run][1] or self._runs[run][1][-1] is not event:
            return full  # refused as unroutable: not in a run
        if run not in self._traced and self.tracing is not None and self.tracing.enabled:
            index = len(self._runs[run][1]) - 1
            self._traced[run] = (index, self.tracing.start_tick_span(subject, event))
        return full

    async def publish_traced(self, subject: str, event: Event) -> None:
        """``publish`` for a sampled record: batched, as ``enqueue_traced``; else published in its
        own root span, whose context the message's headers carry."""
        if self.batching and self._core(subject, event):
            if self.enqueue_traced(subject, event):
                await self.flush()
            return
        if self.tracing is None or not self.tracing.enabled:
            await self.publish(subject, event)
            return
        span = self.tracing.start_tick_span(subject, event)
        with trace.use_span(span, end_on_exit=True):
            await self.publish(subject, event)

    def _core(self, subject: str, event: Event) -> bool:
        try:
            return self._route(subject, event).transport is Transport.CORE
        except Unroutable:
            return True  # enqueue refuses it, flush reports it

    async def _flush_runs(self) -> None:
        # One flush at a time: the linger loop and a full batch must not interleave their runs.
        async with self._flush_lock:
            runs, self._runs, self._pending = self._runs, [], 0
            traced, self._traced = self._traced, {}
            if traced:  # tracing on and a sampled record waits: a look per flush, none per record
                await self._flush_traced(runs, traced)
                return
            for subject, events in runs:
                payload = codec.encode(events[0]) if len(events) == 1 else codec.encode_batch(events)
                await self._publish_core(subject, self._routes[subject].wildcard, payload, len(events))

    async def _flush_traced(
        self, runs: list[tuple[str, list[Event]]], traced: dict[int, tuple[int, Any]]
    ) -> None:
        assert self.tracing is not None
        for i, (subject, events) in enumerate(runs):
            payload = codec.encode(events[0]) if len(events) == 1 else codec.encode_batch(events)
            pattern = self._routes[subject].wildcard
            sampled = traced.get(i)
            if sampled is None:
                await self._publish_core(subject, pattern, payload, len(events))
                continue
            index, span = sampled
            headers = dict(self._base_headers)
            self.tracing.inject_span(span, headers)
            headers[TRACE_INDEX_HEADER] = str(index)
            span.set_attribute("tf.batch_size", len(events))
            try:
                await self._publish_core(subject, pattern, payload, len(events), headers)
            finally:
                span.end()  # the root span lasts from the record's arrival until its batch is sent

    async def _publish_core(
        self,
        subject: str,
        pattern: str,
        payload: bytes,
        count: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        assert self.nc is not None
        try:
            if headers is None and self._header_block is not None:
                await natspub.publish_encoded(self.nc, subject, payload, self._header_block)
            else:
                await self.nc.publish(subject, payload, headers=headers or self._headers())
        except CORE_PUBLISH_FAILURES as exc:
            await self._dropped_while_down(subject, count, exc)
            return
        self.sent += count
        self.hooks.on_published(pattern, count)

    async def _dropped_while_down(self, subject: str, count: int, exc: Exception) -> None:
        """Core NATS is latest-value-wins: while the connection is down, market data is dropped
        and counted (reason bus_unavailable), never allowed to stop the producer."""
        if self._closing:
            raise exc
        await self.hooks.on_dropped(subject, "bus_unavailable", repr(exc), b"", None)

    async def request(self, subject: str, event: Event, timeout_s: float) -> Event | None:
        checked_spec(subject, event)
        assert self.nc is not None
        payload = codec.encode(event)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                msg = await self.nc.request(subject, payload, timeout=left)
                break
            except nats.errors.NoRespondersError:
                # A responder may be (re)subscribing (a restart): ask again until the deadline.
                await asyncio.sleep(min(0.05, max(left, 0.0)))
            except (nats.errors.TimeoutError, TimeoutError):
                return None
        try:
            answer = codec.decode(msg.data)
        except codec.DecodeFailure:
            return None
        return answer if isinstance(answer, Event) else None

    async def gather(self, subject: str, event: Event, count: int, timeout_s: float) -> list[Event]:
        """Ask every responder on ``subject`` at once (the replicas of a partitioned service each
        answer) and wait for ``count`` answers or the timeout: what came, in arrival order."""
        checked_spec(subject, event)
        assert self.nc is not None
        answers: list[Event] = []
        enough = asyncio.Event()

        async def on_answer(msg: Msg) -> None:
            with contextlib.suppress(codec.DecodeFailure):
                answer = codec.decode(msg.data)
                if isinstance(answer, Event):
                    answers.append(answer)
            if len(answers) >= count:
                enough.set()

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_answer)
        try:
            await self.nc.publish(subject, codec.encode(event), reply=inbox)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), timeout_s)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return answers

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        checked_service_subject(subject)
        assert self.nc is not None

        async def on_msg(msg: Msg) -> None:
            # A request is refused like any message (counted, dead-lettered) when it is not one
            # event the catalog carries here, or has no reply subject to answer on.
            events, refused = self._decode(msg, subject)
            if refused is None and (len(events) != 1 or not msg.reply):
                why = "no reply subject" if len(events) == 1 else f"a request of {len(events)} events"
                refused = codec.DecodeFailure(codec.MALFORMED, why)
            if refused is not None:
                await self.hooks.on_dropped(subject, refused.reason, refused.detail, msg.data, msg.headers)
                return
            try:
                answer = await responder(events[0])
                await msg.respond(codec.encode(answer))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad request never kills the responder
                self.hooks.on_handler_error(subject, exc)
                await self.hooks.on_dropped(subject, HANDLER_FAILED, repr(exc), msg.data, msg.headers)

        sub = await self.nc.subscribe(subject, cb=on_msg)
        await self.nc.flush()  # the server knows the responder before anyone is told to ask
        return sub

    async def last(self, subject: str) -> tuple[Event, int] | None:
        stream = stream_of_pattern(subject)
        if stream is None:
            return None
        try:
            msg = await self.js.get_last_msg(stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        try:
            obj = codec.decode(msg.data or b"")
        except codec.DecodeFailure as failure:
            log.error("last stored event unreadable", subject=subject, reason=failure.reason)
            return None
        event = obj.events[-1] if isinstance(obj, Batch) else obj
        return event, int(msg.seq or 0)

    async def flush(self, roundtrip: bool = False) -> None:
        """Send waiting micro-batches; ``roundtrip`` also waits for the server's PONG."""
        while self._unroutable:
            await self._refuse(*self._unroutable.pop(0))
        if self._runs:
            await self._flush_runs()
        if roundtrip and self.nc is not None and self.nc.is_connected:
            await self.nc.flush()

    async def _linger_loop(self) -> None:
        linger = self.settings.batch_linger_ms / 1000
        while True:
            await asyncio.sleep(linger)
            if self._runs or self._unroutable:
                await self.flush()

    async def barrier(self, timeout: float = 5.0) -> None:
        """Return once the server has processed everything this connection sent before (SUBs
        included). nats-py's flush() is not such a barrier: its PING can overtake commands still
        queued in the client (shared/reference/machine-baselines.md), so a service could call
        itself ready while its subscriptions are not yet live and lose the first messages. The
        server handles one connection's commands in order, so our own probe coming back proves it."""
        assert self.nc is not None
        arrived = asyncio.get_running_loop().create_future()

        async def on_probe(_: Msg) -> None:
            if not arrived.done():
                arrived.set_result(True)

        inbox = self.nc.new_inbox()
        probe = await self.nc.subscribe(inbox, cb=on_probe)
        try:
            await self.nc.publish(inbox, b"")
            await asyncio.wait_for(arrived, timeout)
        finally:
            await probe.unsubscribe()

    async def quiet(self) -> tuple[bool, str]:
        """Nothing in hand, nothing waiting for this connection in NATS (core subscriptions'
        queues, durable consumers' pending and unacked), everything sent at the server, and
        nothing handled or sent while this was checked (handlers run during its awaits; a send
        made then may still sit in the client's buffer). A lockstep replay asks every service
        this between the ticks where decisions happen."""
        before = (self.handled, self.sent)
        await self.flush()
        await self.barrier()  # our sends are at the server; what it routed to us is queued here
        infos = await asyncio.gather(*(self.js.consumer_info(st, name) for st, name in self._durables))
        if self.in_hand:
            return False, f"{self.in_hand} in hand"
        waiting = sum(sub.pending_msgs for sub in self._core_subs)
        if waiting:
            return False, f"{waiting} queued"
        for info in infos:
            if info.num_pending or info.num_ack_pending:
                return False, f"{info.name}: {info.num_pending} pending, {info.num_ack_pending} unacked"
        if (self.handled, self.sent) != before:
            return False, "busy while checked"
        return True, ""

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """Bytes as they are, bypassing the codec: for tests that feed malformed input."""
        assert self.nc is not None
        await self.nc.publish(subject, payload, headers=headers)

    # -- subscribe --------------------------------------------------------------------------
    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        types: Types = None,
        durable: str | None = None,
        queue: str | None = None,
        manual_ack: bool = False,
        start_seq: int | None = None,
        new_only: bool = False,
        ack_wait_s: float | None = None,
        every_partition: bool = False,
    ) -> Subscription:
        """``types``: what the handler takes; other events the subjects carry are not delivered
        (a durable one is acked), and a type the catalog does not allow on its subject is
        dead-lettered before any handler sees it. ``durable`` makes a JetStream pull consumer.
        ``start_seq`` makes the caller the owner of the position (e.g. the recorder, which commits
        it with its rows): the durable consumer is recreated to deliver in order from there, so
        nothing left unacked by a crash waits ``ack_wait`` to come back, out of order.
        ``ack_wait_s`` shortens that wait where a redelivery is harmless and a late one is not
        (execution: approvals expire). ``every_partition``: a partitioned replica's subscription
        to subjects of any partition (features: the index symbol's market data)."""
        assert self.nc is not None
        wanted = wanted_types(pattern, types)
        local = self._local(pattern, handler, wanted, durable, queue, manual_ack, start_seq, every_partition)
        origin = self.group.origin if local is not None and self.group is not None else None
        if durable is None:

            async def on_msg(msg: Msg) -> None:
                if origin is not None and msg.headers and msg.headers.get(ORIGIN_HEADER) == origin:
                    return  # its group's own: delivered in-process when it was published
                await self._on_core(msg, handler, wanted)

            async def on_msg_counted(msg: Msg) -> None:  # lockstep replays (quiet()) only
                if origin is not None and msg.headers and msg.headers.get(ORIGIN_HEADER) == origin:
                    return
                self.in_hand += 1
                try:
                    await self._on_core(msg, handler, wanted)
                finally:
                    self.in_hand -= 1
                    self.handled += 1

            subs = [
                await self.nc.subscribe(
                    each,
                    queue=queue or "",
                    cb=on_msg_counted if self.settings.sync else on_msg,
                    pending_msgs_limit=CORE_PENDING_MSGS,
                    pending_bytes_limit=CORE_PENDING_BYTES,
                )
                for each in partitioned_patterns(
                    pattern, self.partitions, None if every_partition else self.owned
                )
            ]
            self._core_subs += subs
            return _Subscriptions(subs, self.group, local)
        stream = stream_of_pattern(pattern)
        if stream is None:
            raise ValueError(f"durable subscription {pattern!r} matches no JetStream stream of the catalog")
        config = js_api.ConsumerConfig(
            durable_name=durable,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s or (30.0 if start_seq is None else 300.0),
            max_deliver=-1,
            max_ack_pending=20_000,
            filter_subject=pattern,
        )
        if new_only:
            # Only when the consumer is created: a service that first appears acts on what
            # happens from now on, never on a stream's history (yesterday's intents or fills).
            config.deliver_policy = js_api.DeliverPolicy.NEW
        if start_seq is not None:
            config.deliver_policy = js_api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = max(start_seq, 1)
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_consumer(stream, durable)
        psub = await self.js.pull_subscribe(pattern, durable=durable, stream=stream, config=config)
        task = asyncio.create_task(
            self._pull_loop(psub, stream, handler, manual_ack, wanted, local), name=f"pull-{durable}"
        )
        self._pull_tasks.append(task)
        self._pull_subs.append(psub)
        self._durables.append((stream, durable))
        return _PullSubscription(psub, task, self.group, local)

    def _local(
        self,
        pattern: str,
        handler: Handler,
        wanted: frozenset[type[Event]] | None,
        durable: str | None,
        queue: str | None,
        manual_ack: bool,
        start_seq: int | None,
        every_partition: bool,
    ) -> LocalSubscription | None:
        """In a process group, the subscription as its members' publishes reach it in-process;
        None where it takes NATS only: a queue group (NATS may pick another process of it) and a
        consumer owning its position (start_seq: the recorder commits stream sequences)."""
        if self.group is None or queue or start_seq is not None:
            return None
        local = LocalSubscription(
            self, pattern, handler, wanted, durable is not None, manual_ack, every_partition
        )
        self.group.add(local)
        return local

    async def _pull_loop(
        self,
        psub: Any,
        stream: str,
        handler: Handler,
        manual_ack: bool,
        wanted: frozenset[type[Event]] | None,
        local: LocalSubscription | None = None,
    ) -> None:
        backoff = 0.1
        origin = self.group.origin if local is not None and self.group is not None else None
        while not self._closing:
            try:
                # One message first: nats-py's fetch(n > 1) can hold the first message until n
                # have come or its timeout ends (a lone intent waited for seconds in lockstep
                # replays). Then exactly what the server says is still waiting, which a no-wait
                # pull returns at once.
                msgs = await psub.fetch(1, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    return
                log.warning("jetstream fetch failed", stream=stream, error=repr(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            waiting = min(msgs[-1].metadata.num_pending or 0, FETCH_MORE) if msgs else 0
            if waiting:
                # A failing connection here: what came first is handled; the next fetch says so.
                with contextlib.suppress(Exception):
                    msgs += await psub.fetch(waiting, timeout=1.0)
            self.in_hand += len(msgs)
            for msg in msgs:
                try:
                    if (
                        origin is not None
                        and msg.headers
                        and msg.headers.get(ORIGIN_HEADER) == origin
                        and self.group is not None
                        and local is not None
                        and await self.group.copy_handled(local, msg.headers)
                    ):
                        await msg.ack()  # handled in-process when it was published
                        continue
                    await self._on_durable(msg, stream, handler, manual_ack, wanted)
                except Exception as exc:
                    # Never the end of the loop (that would stop this consumer for good while the
                    # service says ready): left unacked, the message comes back after ack_wait.
                    log.error("durable message not handled", stream=stream, error=repr(exc), exc_info=exc)
                finally:
                    self.in_hand -= 1
                    self.handled += 1

    async def _on_core(self, msg: Msg, handler: Handler, wanted: frozenset[type[Event]] | None) -> None:
        # Handlers see the catalog's subject, whichever partition the server mapped it to.
        subject = msg.subject if self.partitions <= 1 else unmapped(msg.subject)
        events, refused = self._decode(msg, subject)
        if refused is not None:
            await self.hooks.on_dropped(subject, refused.reason, refused.detail, msg.data, msg.headers)
            return
        headers = msg.headers
        if self.tracing is not None and self.tracing.enabled:
            # A consumer span where the message carries a trace: a lone event, or a micro-batch's
            # sampled record (none for the rest of the batch, nor for an untraced message).
            traced = traced_index(headers, len(events))
            for i, event in enumerate(events):
                if wanted is None or type(event) in wanted:
                    ok = await self._dispatch(handler, Delivery(subject, event, headers), i == traced)
                    if not ok:
                        await self.handler_failed(subject, event, headers)
            return
        for event in events:  # the hot path: no extra coroutine per event
            if wanted is not None and type(event) not in wanted:
                continue  # carried on this subject, but not what the subscription asked for
            try:
                await handler(Delivery(subject, event, headers))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.hooks.on_handler_error(subject, exc)
                await self.handler_failed(subject, event, headers)

    async def handler_failed(self, subject: str, event: Event, headers: Mapping[str, str] | None) -> None:
        """A core event whose handler raised is lost (no redelivery on core NATS): counted and
        kept as a dead letter, that event alone (re-encoded as decoded, not its whole batch)."""
        await self.hooks.on_dropped(
            subject, HANDLER_FAILED, f"{type(event).__name__}: handler raised", codec.encode(event), headers
        )

    async def _on_durable(
        self,
        msg: Msg,
        stream: str,
        handler: Handler,
        manual_ack: bool,
        wanted: frozenset[type[Event]] | None,
    ) -> None:
        events, refused = self._decode(msg)
        if refused is not None:
            await self.hooks.on_dropped(msg.subject, refused.reason, refused.detail, msg.data, msg.headers)
            await msg.term()  # dead-lettered: redelivering garbage helps nobody
            return
        if wanted is not None and type(events[0]) not in wanted:
            await msg.ack()  # carried on this subject, but not what the subscription asked for
            return
        meta = msg.metadata
        delivery = Delivery(
            msg.subject, events[0], msg.headers, stream, meta.sequence.stream, meta.num_delivered > 1, msg
        )
        traced = self.tracing is not None and self.tracing.enabled and traced_index(msg.headers, 1) == 0
        ok = await self._dispatch(handler, delivery, traced)
        if ok and not manual_ack:
            await msg.ack()
        elif not ok:
            if meta.num_delivered >= MAX_HANDLER_ATTEMPTS:
                await self.hooks.on_dropped(
                    msg.subject, HANDLER_FAILED, "gave up after retries", msg.data, msg.headers
                )
                await msg.term()
            else:
                await msg.nak(delay=min(0.5 * meta.num_delivered, 5.0))

    def _decode(
        self, msg: Msg, subject: str | None = None
    ) -> tuple[Sequence[Event], codec.DecodeFailure | None]:
        """The events of a message, or why it is refused (synchronous: no coroutine per message)."""
        try:
            obj = codec.decode(msg.data)
        except codec.DecodeFailure as failure:
            return (), failure
        batch = type(obj) is Batch
        events: Sequence[Event] = obj.events if batch else (obj,)  # type: ignore[assignment, union-attr]
        subject = subject or msg.subject
        spec = self._routes.get(subject)
        if spec is None:
            spec = resolve(subject)
            if spec is not None:
                self._routes[subject] = spec
        allowed = spec.event_types if spec is not None else ()
        ceiling, suspect = self._ts_ceiling, False
        for event in events:
            if type(event) not in allowed:
                return (), codec.DecodeFailure(
                    codec.WRONG_SUBJECT, f"{type(event).__name__} on {msg.subject}"
                )
            if event.ts_event > ceiling or event.ts_init > ceiling:
                suspect = True
        if not events or spec is None:
            return (), codec.DecodeFailure(codec.MALFORMED, "empty batch")
        if batch and spec.transport is Transport.JETSTREAM:
            # Durable events travel one per message (each its own Nats-Msg-Id and ack).
            return (), codec.DecodeFailure(codec.MALFORMED, f"a batch on durable {msg.subject}")
        if suspect and (far := self._far(events)):
            return (), codec.DecodeFailure(codec.FAR_TIMESTAMP, far)
        self.hooks.on_received(spec.wildcard, len(events), events[0].ts_init)
        return events, None

    def _far(self, events: Sequence[Event]) -> str:
        """Why one of ``events`` is stamped far in the future ("" when none is, against the wall
        clock now; the ceiling moves up with it)."""
        self._ts_ceiling = ceiling = time.time_ns() + FAR_FUTURE_NS
        for event in events:
            for name in ("ts_event", "ts_init"):
                stamp = getattr(event, name)
                if stamp > ceiling:
                    ahead = (stamp - ceiling + FAR_FUTURE_NS) / 1e9 / 86_400
                    return f"{type(event).__name__} {name}={stamp}: {ahead:.0f} days ahead of the clock"
        return ""

    async def _dispatch(self, handler: Handler, delivery: Delivery, traced: bool) -> bool:
        """``traced``: in a consumer span, child of the context the message carries."""
        try:
            if traced and self.tracing is not None:
                with self.tracing.start_consumer_span(delivery.subject, delivery.headers):
                    await handler(delivery)
            else:
                await handler(delivery)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.hooks.on_handler_error(delivery.subject, exc)
            return False

    # -- shutdown ---------------------------------------------------------------------------
    async def close(self) -> None:
        """Drain: stop pulling, finish what is in hand, send what is buffered, then close (a
        process group's member leaves the shared connection to the group)."""
        self._closing = True
        if self._linger_task is not None:
            self._linger_task.cancel()
        for task in self._pull_tasks:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=3.0)
        # A pull subscription's inbox never drains by itself (nats-py waits drain_timeout for it).
        for psub in self._pull_subs:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        if self.nc is None or self.nc.is_closed:
            return
        with contextlib.suppress(Exception):
            await self.flush()
        if self.group is not None:
            self.group.leave(self)
            for sub in self._core_subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            return
        with contextlib.suppress(Exception):
            await self.nc.drain()


FETCH_MORE = 255  # what a pull takes beside its first message, when already waiting


class _Subscriptions:
    """A caller's core subscription: one or several on the server (a partitioned replica's
    partitions), and in a process group its in-process twin."""

    def __init__(
        self, subs: list[Any], group: ProcessGroup | None = None, local: LocalSubscription | None = None
    ) -> None:
        self.subs, self.group, self.local = subs, group, local

    async def unsubscribe(self) -> None:
        if self.group is not None and self.local is not None:
            self.group.remove(self.local)
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class _PullSubscription:
    def __init__(
        self,
        psub: Any,
        task: asyncio.Task[None],
        group: ProcessGroup | None = None,
        local: LocalSubscription | None = None,
    ) -> None:
        self.psub, self.task, self.group, self.local = psub, task, group, local

    async def unsubscribe(self) -> None:
        if self.group is not None and self.local is not None:
            self.group.remove(self.local)
        self.task.cancel()
        with contextlib.suppress(Exception):
            await self.psub.unsubscribe()

"""The one service runtime: binds a pure core to the bus and gives every service the same
connect/reconnect, subscribe/publish, /healthz /readyz /metrics /status, logging, tracing, dead
letters and clean drain on SIGTERM."""

from __future__ import annotations

import abc
import asyncio
import collections
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from libs.common.bus import (
    Bus,
    Delivery,
    E,
    Handler,
    InProcessBus,
    NullHooks,
    Responder,
    Subscription,
    SyncHandler,
    Types,
)
from libs.common.clock import Clock, LiveClock
from libs.common.config import Settings
from libs.common.group import ProcessGroup
from libs.common.hotstate import HotState
from libs.common.ids import digest
from libs.common.logging import LogOnce, get_logger
from libs.common.metrics import Kpi, KpiCollector, RuntimeMetrics
from libs.common.nats_bus import NatsBus
from libs.common.telemetry import Tracing
from proto.alerts import DeadLetter
from proto.base import Event
from proto.control import Heartbeat, Progress, SyncReply
from proto.subjects import PARTITIONED_SERVICES, resolve, spec, subject_of

log = get_logger(__name__)


class PartitionMismatch(RuntimeError):
    """A replica's partition count is not its server's: it must not start."""


DLQ, SYNC = spec("dlq.{service}"), spec("sync.{service}")
# Drops with no message in hand to keep as a dead letter (counted only).
NOTHING_IN_HAND = frozenset({"slow_consumer", "bus_unavailable"})
# A dead letter's room besides the payload it keeps: its other fields (the error at most 2000
# characters) and the message's headers, all within the server's max_payload.
DEAD_LETTER_OVERHEAD = 16 * 1024


class ServiceApp(abc.ABC):
    """A service's runtime half: short and boring. The trading logic lives in its core."""

    name: str = "service"
    #: set by an app that finishes on its own (a replay that reached the end of its data)
    done: asyncio.Event

    def __init__(self) -> None:
        self.done = asyncio.Event()

    @abc.abstractmethod
    async def start(self, rt: Runtime) -> None:
        """Subscribe and start tasks. Returns once the service is ready."""

    async def stop(self) -> None:  # noqa: B027 - optional
        """Stop producing and flush; the bus drains afterwards."""

    def status(self) -> dict[str, Any]:
        return {}

    def kpis(self) -> list[Kpi]:
        """Trading figures for people on /metrics (tf_*), read off the app's state at scrape
        time (libs.common.metrics.Kpi); none by default."""
        return []

    @property
    def emitted(self) -> collections.Counter[str]:
        """What this app has emitted, by event type (empty before it started)."""
        rt = self.__dict__.get("rt")
        return rt.emitted if isinstance(rt, Runtime) else collections.Counter()

    def busy(self) -> bool:
        """Work held outside a handler (a batch waiting for its timer): not quiet yet."""
        return False

    def progress(self) -> Progress | None:
        """What the service has made of its input, sent with each heartbeat for the alerts
        service's watchers (proto.control.Progress); none by default. Read off its state, never
        computed per message."""
        return None


def _awaiting(handler: SyncHandler) -> Handler:
    """A SyncHandler as a Handler: for buses that await every handler (NATS, process groups)."""

    async def run(d: Delivery[Any]) -> None:
        pending = handler(d)
        if pending is not None:
            await pending

    return run


class Runtime:
    def __init__(
        self,
        service: str,
        settings: Settings,
        bus: Bus | None = None,
        clock: Clock | None = None,
        batching: bool = False,
        group: ProcessGroup | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.clock: Clock = clock or LiveClock()
        self.metrics = RuntimeMetrics(service)
        tel = settings.telemetry
        self.tracing = Tracing(service, tel.tracing, tel.otlp_endpoint)
        self.group = group
        self.bus: Bus = bus or NatsBus(
            settings.nats, service, hooks=self, tracing=self.tracing, batching=batching, group=group
        )
        # In a process group, ready only when every member is (what a container's probe asks).
        self.also_ready: Callable[[], bool] | None = None
        if bus is not None and isinstance(getattr(bus, "hooks", None), NullHooks):
            bus.hooks = self  # type: ignore[attr-defined]  # an in-process bus reports here too
        self.publish = self.bus.publish  # type: ignore[method-assign]
        self.emitted: collections.Counter[str] = collections.Counter()  # by event type
        # Hot-path hooks go straight to the metrics (one call less per message).
        self.on_received = self.metrics.on_received  # type: ignore[method-assign]
        self.on_published = self.metrics.on_published  # type: ignore[method-assign]
        self.ready = False
        self.became_ready = asyncio.Event()
        self.started_ns = time.time_ns()
        self._heartbeats = 0
        self.http_port: int | None = None
        self._log_once = LogOnce()
        self._stop = asyncio.Event()
        self._http_runner: web.AppRunner | None = None
        self._dead_letters = 0
        self.app: ServiceApp | None = None
        self.hot: HotState | None = None  # Redis hot state, for the services that keep some
        # At scrape time, never per message: the app's KPIs are read off its state then.
        self.metrics.registry.register(
            KpiCollector(service, lambda: self.app.kpis() if self.app is not None else [])
        )

    # -- what services call -----------------------------------------------------------------
    async def publish(self, subject: str, event: Event) -> None:
        """Replaced in __init__ by the bus's own bound method (one coroutine less per publish)."""
        await self.bus.publish(subject, event)

    def emit(self, event: Event) -> Awaitable[None]:
        """Publish on the catalog's subject for this event (proto.subjects.subject_of): a runtime
        never formats a subject by hand. Returns the bus's own publish (no coroutine of its own:
        one level less per event on the hot paths)."""
        self.emitted[type(event).__name__] += 1
        if self.hot is not None:
            self.hot.put_event(event)
        return self.publish(subject_of(event), event)

    async def emit_all(self, events: Iterable[Event]) -> None:
        for event in events:
            await self.emit(event)

    async def subscribe(
        self,
        pattern: str,
        handler: Handler | SyncHandler | Mapping[type[Event], Handler],
        *,
        sync: bool = False,
        types: Types = None,
        durable: str | None = None,
        queue: str | None = None,
        manual_ack: bool = False,
        start_seq: int | None = None,
        new_only: bool = False,
        ack_wait_s: float | None = None,
        every_partition: bool = False,
    ) -> Subscription:
        """``types``: the event types ``handler`` takes (a ``Delivery[T]``); see Bus.subscribe.
        ``every_partition``: see NatsBus.subscribe (nothing on an in-process bus).
        ``handler`` may be a table, one typed handler per event type: one subscription (so one
        consumer keeps the stream's order across the types), each event to its type's handler.
        ``sync``: ``handler`` is a plain function that returns None, or an awaitable when it has
        something to wait for (a SyncHandler). The per-tick handlers are: on the in-process bus
        (the backtest, the RL environment) they are then called without a coroutine per event,
        which was a tenth of a backtest's time per tick; on NATS they run wrapped as usual."""
        if self.settings.nats.nkey_seed_file is not None:
            from libs.common.natsauth import may_subscribe

            if not may_subscribe(self.service, pattern):  # the server would refuse it, quietly
                why = "add it to CONSUMES in proto/subjects.py"
                raise PermissionError(f"{self.service} may not subscribe to {pattern!r}: {why}")
        if durable is not None:
            durable = self._replica_durable(durable)
        run: Handler
        if sync:
            assert not isinstance(handler, Mapping), "a sync subscription takes one handler"
            if isinstance(self.bus, InProcessBus):
                return self.bus.subscribe_sync(pattern, handler, types=types)
            run = _awaiting(handler)
        elif isinstance(handler, Mapping):
            table = dict(handler)
            types = tuple(table)

            async def dispatch(d: Delivery[Any]) -> None:
                await table[type(d.event)](d)

            run = dispatch
        else:
            run = cast(Handler, handler)  # an async handler: ``sync`` says which it is
        if every_partition and isinstance(self.bus, NatsBus):
            return await self.bus.subscribe(pattern, run, types=types, every_partition=True)
        return await self.bus.subscribe(
            pattern,
            run,
            types=types,
            durable=durable,
            queue=queue,
            manual_ack=manual_ack,
            start_seq=start_seq,
            new_only=new_only,
            ack_wait_s=ack_wait_s,
        )

    async def last(self, subject: str, kind: type[E]) -> tuple[E, int] | None:
        """The last ``kind`` event stored on a durable subject and its stream sequence (None:
        none kept, or another type)."""
        found = await self.bus.last(subject)
        if found is None or type(found[0]) is not kind:
            return None
        return found  # type: ignore[return-value]

    async def request(self, subject: str, event: Event, timeout_s: float, reply: type[E]) -> E | None:
        """Ask and wait for a ``reply``; None when none (or something else) comes in time."""
        answer = await self.bus.request(subject, event, timeout_s)
        return answer if type(answer) is reply else None

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        return await self.bus.serve(subject, responder)

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def request_stop(self) -> None:
        self._stop.set()

    # -- BusHooks ---------------------------------------------------------------------------
    def on_received(self, pattern: str, count: int, ts_init: int) -> None:
        self.metrics.on_received(pattern, count, ts_init)

    def on_published(self, pattern: str, count: int) -> None:
        self.metrics.on_published(pattern, count)

    async def on_dropped(
        self, subject: str, reason: str, detail: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        found = resolve(subject)
        pattern = found.wildcard if found else "(unknown)"
        self.metrics.on_dropped(pattern, reason)
        if self._log_once.first("dropped", pattern, reason):
            log.warning(
                "message refused (logged once per kind; see tf_events_dropped_total)",
                subject=subject,
                reason=reason,
                detail=detail[:300],
            )
        if reason in NOTHING_IN_HAND or subject.startswith("dlq."):
            return  # nothing in hand to keep, or it is already a dead letter
        now = self.clock.now_ns()
        self._dead_letters += 1
        # Unique per receipt: the same bad bytes received twice are two dead letters, while a
        # retried publish of this one letter is still deduplicated by JetStream.
        key = f"{digest(subject.encode() + payload)}-{self.started_ns}-{self._dead_letters}"
        error = detail[:2000]
        room = (
            self.bus.max_payload() - DEAD_LETTER_OVERHEAD if isinstance(self.bus, NatsBus) else len(payload)
        )
        if len(payload) > room:
            # Refused bytes near the server's limit do not fit in a letter with them: their head
            # is kept (the digest is of them whole), and the letter says so.
            error = f"payload cut to its first {room} of {len(payload)} bytes; {error}"
            payload = payload[: max(room, 0)]
        letter = DeadLetter(
            ts_event=now,
            ts_init=now,
            service=self.service,
            subject=subject,
            reason=reason,
            error=error,
            payload=payload,
            digest=key,
        )
        try:
            await self.bus.publish(DLQ.subject(service=self.service), letter)
        except Exception as exc:
            if self._log_once.first("dlq-failed"):
                log.error("dead letter could not be published", error=repr(exc))

    async def _sync(self, probe: Event) -> Event:
        """A lockstep replay's question: is this service quiet (see NatsBus.quiet)?"""
        assert isinstance(self.bus, NatsBus)
        quiet, detail = await self.bus.quiet()
        if quiet and self.app is not None and self.app.busy():
            quiet, detail = False, "work held by the app"
        now = self.clock.now_ns()
        return SyncReply(
            ts_event=now,
            ts_init=now,
            service=self.service,
            quiet=quiet,
            handled=self.bus.handled,
            sent=self.bus.sent,
            detail=detail,
        )

    def on_handler_error(self, subject: str, exc: BaseException) -> None:
        found = resolve(subject)
        pattern = found.wildcard if found else subject
        self.metrics.handler_errors.labels(self.service, pattern).inc()
        if self._log_once.first("handler", pattern, type(exc).__name__):
            log.error("handler failed (logged once per kind)", subject=subject, error=repr(exc), exc_info=exc)

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self, app: ServiceApp, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT, ``request_stop()``, or the app reports done."""
        self.app = app
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
        await self._start_http()
        await self._connect()
        hs = self.settings.hot_state
        if hs.redis_url and isinstance(self.bus, NatsBus):  # never in the in-process backtest
            self.hot = HotState(hs.redis_url, hs.flush_ms, hs.ttl_s, hs.refresh_s, hs.prefix)
            self.hot.start()
        await app.start(self)
        if isinstance(self.bus, NatsBus):
            if self.settings.nats.sync:
                await self.bus.serve(SYNC.subject(service=self.service), self._sync)
            await self.bus.barrier()  # subscriptions live on the server before we say ready
        self.ready = True
        self.became_ready.set()
        self.metrics.ready.labels(self.service).set(1)
        log.info("service ready", http_port=self.http_port)
        beating = self._start_heartbeat()
        stop_wait = asyncio.create_task(self._stop.wait())
        done_wait = asyncio.create_task(app.done.wait())
        await asyncio.wait({stop_wait, done_wait}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop_wait, done_wait):
            task.cancel()
        if beating is not None:
            beating.cancel()
            await self._beat(stopping=True)  # a clean stop: the silence that follows is expected
        await self.shutdown()
        return 0

    def _replica_durable(self, durable: str) -> str:
        """Replicas of a partitioned service each keep their own durable consumer: sharing one,
        JetStream would hand each message (a fill, a denial, a headline's score, a live
        parameter) to one replica only, whose symbol it may not be."""
        p = self.settings.partition
        if self.service not in PARTITIONED_SERVICES or p.count <= 1:
            return durable
        owned = "_".join(map(str, sorted(p.owned or range(p.count))))
        return f"{durable}-p{owned}of{p.count}"

    def _replica(self) -> str:
        """Replicas of a partitioned service each say which: one dying is not hidden by another."""
        p = self.settings.partition
        if p.count <= 1 or not p.owned:
            return ""
        return f"{','.join(map(str, sorted(p.owned)))}/{p.count}"

    def _start_heartbeat(self) -> asyncio.Task[None] | None:
        """Only on NATS: an in-process bus (the backtest) has nobody to watch for silence; nor in
        lockstep, where every message a service sends counts in the replay's quiet check."""
        every = self.settings.telemetry.heartbeat_s
        if not isinstance(self.bus, NatsBus) or every <= 0 or self.settings.nats.sync:
            return None

        async def beat_forever() -> None:
            while True:
                await self._beat()
                await asyncio.sleep(every)

        return asyncio.create_task(beat_forever(), name="heartbeat")

    async def _beat(self, stopping: bool = False) -> None:
        self._heartbeats += 1
        now = self.now_ns()
        beat = Heartbeat(
            ts_event=now,
            ts_init=now,
            service=self.service,
            instance=self.started_ns,
            seq=self._heartbeats,
            stopping=stopping,
            replica=self._replica(),
            progress=self._progress(),
        )
        try:
            await self.emit(beat)
        except Exception as exc:  # a heartbeat that cannot go out is itself the signal
            log.warning("heartbeat not sent", error=repr(exc))

    def _progress(self) -> Progress | None:
        try:
            return self.app.progress() if self.app is not None else None
        except Exception as exc:  # the heartbeat still goes out: liveness matters more
            if self._log_once.first("progress", type(exc).__name__):
                log.warning("heartbeat progress failed", error=repr(exc), exc_info=exc)
            return None

    async def _connect(self) -> None:
        """Connect with capped backoff: a service that starts before NATS waits for it."""
        if not isinstance(self.bus, NatsBus):
            return
        delay = 0.2
        while True:
            try:
                await self.bus.connect()
                break
            except Exception as exc:
                log.warning(
                    "nats not reachable yet", url=self.settings.nats.url, error=repr(exc), retry_s=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.metrics.connected.labels(self.service).set(1)
        self.bus.on_connection_change = self._on_connection_change
        self._bind_partitions(self.bus)
        if self.settings.nats.nkey_seed_file is None:
            await self.bus.ensure_streams()  # an open bus: anyone may, so the service does
            return
        # A secured bus: the streams are the provisioner's. Waits (and says why) until they exist.
        delay = 0.5
        while missing := await self.bus.missing_streams():
            log.error("streams missing: run `tradefleet nats provision`", missing=missing, retry_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _bind_partitions(self, bus: NatsBus) -> None:
        """A replica of a partitioned service hears only its own partitions where the server
        maps them (proto.subjects.PARTITION_KEYED); its partition.count must be the server's, or
        some symbols would reach no replica, or two."""
        p = self.settings.partition
        if self.service not in PARTITIONED_SERVICES or p.count <= 1:
            return
        if bus.partitions == 1:
            log.warning(
                "the server does not map partitions: every replica receives every symbol and drops "
                "the others' (serve them with `tradefleet nats config --partitions N`)",
                count=p.count,
            )
            return
        if bus.partitions != p.count:
            raise PartitionMismatch(
                f"partition.count is {p.count} but the NATS server maps {bus.partitions} partitions: "
                "give every replica the server's count (docs/ARCHITECTURE.md, Scaling)"
            )
        bus.owned = frozenset(p.owned or range(p.count))

    def _on_connection_change(self, connected: bool) -> None:
        self.metrics.connected.labels(self.service).set(1 if connected else 0)
        if connected:
            self.metrics.reconnects.labels(self.service).inc()

    async def shutdown(self) -> None:
        log.info("draining")
        self.ready = False
        self.metrics.ready.labels(self.service).set(0)
        if self.app is not None:
            try:
                await self.app.stop()
            except Exception as exc:
                log.error("stop failed", error=repr(exc), exc_info=exc)
        await self.bus.close()
        if self.hot is not None:
            await self.hot.close()
        self.tracing.shutdown()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        log.info("stopped")

    # -- HTTP -------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        http = self.settings.http
        if http.port < 0:
            return
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        self._http_runner = web.AppRunner(app, access_log=None)
        await self._http_runner.setup()
        site = web.TCPSite(self._http_runner, http.host, http.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else http.port

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.service})

    async def _readyz(self, _: web.Request) -> web.Response:
        connected = not isinstance(self.bus, NatsBus) or self.bus.connected.is_set()
        group_ready = self.also_ready() if self.also_ready is not None else True
        ok = self.ready and connected and group_ready
        body = {"ready": ok, "bus_connected": connected}
        if self.group is not None:
            body["group_ready"] = group_ready
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _status(self, _: web.Request) -> web.Response:
        return web.json_response(self.status())

    def status(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "ready": self.ready,
            "uptime_s": round((time.time_ns() - self.started_ns) / 1e9, 1),
            "dropped": self.metrics.dropped_by_reason(),
            "dead_letters": self._dead_letters,
            "app": self.app.status() if self.app else {},
            **({"group": self.group.status()} if self.group is not None else {}),
        }

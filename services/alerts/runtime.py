"""alerts runtime: alert.> in (durably), messages out to people through the configured sinks.

Each sink has its own queue and worker, so one that is down or slow never delays another
(freqtrade's RPC manager does the same). A worker retries a temporary failure with backoff
(stamina) for ``alerts.retry_for_s``, then gives the message up; a permanent failure (a bad
token, credentials refused) is given up at once. Either way the failure is counted, logged and
said on the other sinks. An alert is acknowledged to JetStream only when the message carrying
it has been delivered or definitively failed on every sink it was routed to: a crash before
that redelivers it (at least once, never lost). A redelivery of an alert still in flight is
recognised by its id and not sent twice.

With Telegram configured, a command desk (services/alerts/desk.py) also obeys operator commands
from the allow-listed chats. Heartbeats (hb.>) are watched: a service silent past
``alerts.heartbeat_limit_s`` is a critical alert, its return a recovered one (absence.py); the
progress they carry tells a silent symbol, a features service making nothing and a recorder
falling behind, and one timeframe's vectors tell regime flips (flow.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

import stamina

from libs.common.bus import Delivery
from libs.common.calendar import market_calendar
from libs.common.clock import LiveClock
from libs.common.config import AlertsSettings, Settings
from libs.common.logging import get_logger
from libs.common.metrics import Kpi
from libs.common.runtime import Runtime, ServiceApp
from proto.alerts import Alert
from proto.control import Heartbeat
from proto.features import FeatureVector
from proto.units import SECOND_NS
from services.alerts.absence import AbsenceWatch
from services.alerts.commands import Mute
from services.alerts.core import AlertsCore, Outgoing
from services.alerts.desk import CommandDesk
from services.alerts.flow import FlowWatch
from services.alerts.sinks import Message, PermanentSinkError, Sink, SinkError

log = get_logger(__name__)
TICK_S = 0.25  # how often held messages are checked for their time
STOP_GRACE_S = 10.0  # what a stopping service gives its sinks to deliver what is queued
# JetStream redelivers an alert unacknowledged this long: what a crashed service loses at most
# in time. Alerts still held or retrying are kept alive (in progress) every third of it.
ACK_WAIT_S = 30.0
REDELIVER_AFTER_STOP_S = 2.0


@dataclass
class _Job:
    """One message on its way to some sinks; the alerts acknowledged when none is pending."""

    outgoing: Outgoing
    pending: set[str] = field(default_factory=set)


def build_sinks(cfg: AlertsSettings) -> list[Sink]:
    """The sinks the configuration turns on (a token and chats; a host and recipients)."""
    from services.alerts.smtp import EmailSink
    from services.alerts.telegram import TelegramSink

    sinks: list[Any] = [TelegramSink(cfg.telegram), EmailSink(cfg.email)]
    return [s for s in sinks if s.enabled]


def _temporary(exc: Exception) -> bool:
    return isinstance(exc, SinkError) and not isinstance(exc, PermanentSinkError)


class AlertsApp(ServiceApp):
    name = "alerts"

    def __init__(self, settings: Settings, sinks: list[Sink] | None = None) -> None:
        super().__init__()
        self.cfg = settings.alerts
        self.sinks = build_sinks(self.cfg) if sinks is None else sinks
        self.core = AlertsCore(self.cfg, LiveClock(), [s.name for s in self.sinks])
        self.queues: dict[str, asyncio.Queue[_Job]] = {s.name: asyncio.Queue() for s in self.sinks}
        self.inflight: dict[str, Delivery[Alert]] = {}  # alert id -> its latest delivery (to ack)
        self.delivered: collections.Counter[str] = collections.Counter()
        self.failed: collections.Counter[str] = collections.Counter()
        self.last_failure: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.desk = CommandDesk.configured(self.cfg.telegram, self._mute)
        self.absence = AbsenceWatch(self.cfg.heartbeat_limit_s, LiveClock())
        first_bar_ns = settings.features.timeframe_ns[0]
        self.flow = FlowWatch(self.cfg, market_calendar(settings.market), first_bar_ns, LiveClock())

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core.clock = rt.clock
        if self.desk is not None:
            await self.desk.start(rt)
        for sink in self.sinks:
            self._tasks.append(asyncio.create_task(self._work(sink), name=f"alerts-{sink.name}"))
        self._tasks.append(asyncio.create_task(self._tick(), name="alerts-tick"))
        self._tasks.append(asyncio.create_task(self._keep_alive(), name="alerts-in-progress"))
        await rt.subscribe(
            "alert.>",
            self._on_alert,
            types=Alert,
            durable="alerts",
            manual_ack=True,
            ack_wait_s=ACK_WAIT_S,
            new_only=True,  # a first start tells people what happens from now, not the stream's week
        )
        self.absence.clock = self.flow.clock = rt.clock
        await rt.subscribe("hb.>", self._on_heartbeat, types=Heartbeat)
        if tf := self.cfg.regime_timeframe:  # one bar per symbol per timeframe: a light stream
            await rt.subscribe(f"feat.{tf}.*", self._on_vector, types=FeatureVector)
        if not self.sinks:
            log.warning("no alert sink configured: alerts are acknowledged and only counted")

    def _mute(self, mute: Mute) -> None:
        self.core.mute(mute.key, mute.until_ns)
        log.info("alert key muted", key=mute.key, until_ns=mute.until_ns)

    async def _on_alert(self, d: Delivery[Alert]) -> None:
        alert_id = d.event.alert_id
        if alert_id in self.inflight:  # redelivered while its message is on its way
            self.inflight[alert_id] = d
            self.core.stats["redelivered_in_flight"] += 1
            return
        self.inflight[alert_id] = d
        await self._dispatch(self.core.take(d.event, alert_id))

    async def _on_heartbeat(self, d: Delivery[Heartbeat]) -> None:
        await self._raise(self.absence.on_heartbeat(d.event) + self.flow.on_heartbeat(d.event))

    async def _on_vector(self, d: Delivery[FeatureVector]) -> None:
        await self._raise(self.flow.on_vector(d.event))

    async def _raise(self, alerts: list[Alert]) -> None:
        """On the bus like any service's: stored in ALERTS, and back to this service's consumer.
        When the bus refuses (the very outage that silenced the heartbeats), straight to the sinks."""
        for alert in alerts:
            log.warning(alert.title, **alert.labels)
            try:
                await self.rt.emit(alert)
            except Exception as exc:
                log.error("alert not published; delivered directly", error=repr(exc))
                await self._dispatch(self.core.take(alert, f"local:{alert.alert_id}"))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:  # one bad turn must not end the watch (nothing would be flushed or detected again)
                await self._raise(self.absence.check())
                await self._dispatch(self.core.due())
            except Exception as exc:
                log.error("alerts tick failed", error=repr(exc), exc_info=exc)

    async def _keep_alive(self) -> None:
        """An alert held for its window or waiting for a sink to come back is still being
        worked on: JetStream must not redeliver it (a second message)."""
        while True:
            await asyncio.sleep(ACK_WAIT_S / 3)
            for delivery in list(self.inflight.values()):
                with contextlib.suppress(Exception):  # a lost connection: redelivery is the fallback
                    await delivery.in_progress()

    async def _dispatch(self, outgoing: list[Outgoing]) -> None:
        for o in outgoing:
            job = _Job(o, set(o.sinks))
            if not job.pending:
                await self._ack(o.refs)
            for name in o.sinks:
                self.queues[name].put_nowait(job)

    async def _work(self, sink: Sink) -> None:
        queue = self.queues[sink.name]
        while True:
            job = await queue.get()
            try:
                try:
                    failure = await self._deliver(sink, job.outgoing.message)
                except Exception as exc:  # not a SinkError: a bug or a library's surprise, given up
                    failure = f"failed: {exc!r}"
                    self.failed[sink.name] += 1
                    log.error("alert sink failed unexpectedly", sink=sink.name, error=repr(exc), exc_info=exc)
                if failure:
                    await self._said_elsewhere(sink.name, job.outgoing.message, failure)
                job.pending.discard(sink.name)
                if not job.pending:
                    await self._ack(job.outgoing.refs)
            finally:
                queue.task_done()

    async def _deliver(self, sink: Sink, message: Message) -> str:
        """Deliver, retrying what may work later; "" when delivered, else why not."""
        try:
            async for attempt in stamina.retry_context(
                on=_temporary, attempts=None, timeout=self.cfg.retry_for_s, wait_initial=0.5, wait_max=5.0
            ):
                with attempt:
                    await sink.send(message)
        except SinkError as exc:
            kind = "refused" if isinstance(exc, PermanentSinkError) else "gave up"
            why = f"{kind}: {exc}"
            self.failed[sink.name] += 1
            self.last_failure[sink.name] = why
            log.error("alert not delivered", sink=sink.name, key=message.key, reason=why)
            return why
        self.delivered[sink.name] += 1
        return ""

    async def _said_elsewhere(self, failed: str, message: Message, why: str) -> None:
        """A sink that could not deliver is itself news for the people on the other sinks."""
        notice = Message(
            key=f"alerts:{failed}",
            severity="warning",
            source="alerts",
            title=f"the {failed} sink could not deliver an alert",
            body=f"{message.headline()}: {why}",
        )
        others = tuple(s.name for s in self.sinks if s.name != failed)
        if others:
            job = _Job(Outgoing(notice, others), set(others))
            for name in others:
                self.queues[name].put_nowait(job)

    async def _ack(self, refs: list[Any]) -> None:
        for alert_id in refs:
            delivery = self.inflight.pop(alert_id, None)
            if delivery is not None:
                await delivery.ack()

    async def stop(self) -> None:
        """Send what is held, give the sinks a moment to deliver, then stop; what is still not
        delivered is handed back to JetStream, which redelivers it to the next start."""
        if self.desk is not None:
            await self.desk.stop()
        await self._dispatch(self.core.flush_all())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self.queues.values())), STOP_GRACE_S)
        for task in self._tasks:
            task.cancel()
        for delivery in self.inflight.values():  # to the next start, soon (not after the ack wait)
            with contextlib.suppress(Exception):
                await delivery.nak(REDELIVER_AFTER_STOP_S)
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    def kpis(self) -> list[Kpi]:
        """Alerts by source and severity, deliveries and failures per sink, and each watched
        service's heartbeat age (label ``watched``: ``service`` is this one, as on every tf_*)."""
        out = []
        for key, n in sorted(self.core.produced.items()):
            source, _, severity = key.rpartition("/")  # "source/severity"
            out.append(
                Kpi(
                    "tf_alerts_produced_total",
                    "Alerts taken, by source and severity",
                    n,
                    {"source": source, "severity": severity},
                    "counter",
                )
            )
        for sink in self.sinks:  # every sink, so a quiet one reads 0 rather than no data
            out.append(
                Kpi(
                    "tf_alerts_delivered_total",
                    "Messages delivered, by sink",
                    self.delivered[sink.name],
                    {"sink": sink.name},
                    "counter",
                )
            )
            out.append(
                Kpi(
                    "tf_alerts_failed_total",
                    "Messages given up, by sink",
                    self.failed[sink.name],
                    {"sink": sink.name},
                    "counter",
                )
            )
        now = self.absence.clock.now_ns()
        for service, seen in sorted(self.absence.seen.items()):
            out.append(
                Kpi(
                    "tf_heartbeat_age_seconds",
                    "Seconds since the service's last heartbeat",
                    (now - seen.at_ns) / SECOND_NS,
                    {"watched": service},
                )
            )
            out.append(
                Kpi(
                    "tf_service_absent",
                    "1 while the service is declared absent",
                    1.0 if seen.absent_since else 0.0,
                    {"watched": service},
                )
            )
        return out

    def status(self) -> dict[str, Any]:
        return {
            "sinks": [s.name for s in self.sinks],
            "produced": dict(self.core.produced),
            "delivered": dict(self.delivered),
            "failed": dict(self.failed),
            "last_failure": self.last_failure,
            "queued": {name: q.qsize() for name, q in self.queues.items()},
            "in_flight": len(self.inflight),
            "stats": dict(self.core.stats),
            "muted": self.core.stats["muted"],
            "watched_services": sorted(self.absence.seen),
            "absent": sorted(s for s, seen in self.absence.seen.items() if seen.absent_since),
            "silent_symbols": sorted(self.flow.day.silent),
            "no_vectors": sorted(w for w, c in self.flow.day.vectors.items() if c.declared),
            "recorder_lagging": sorted(self.flow.lagging),
            "mutes": {key: round(until / SECOND_NS) for key, until in self.core.mutes().items()},
            **(self.desk.status() if self.desk is not None else {}),
        }

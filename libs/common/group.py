"""Process groups: several services in one process, on one NATS connection, handing each other
their events in-process (`tradefleet service features+fastlane+qos+risk`, fleet.groups).

Each member keeps its own app, runtime and NatsBus (its own metrics, durable consumers, lockstep
answers, heartbeats and HTTP endpoint): the code is the separate deployment's. What changes is
how an event between two members travels:

- **Everything still goes to NATS.** A member's publish is written on the group's connection as
  before (the recorder, taps and the audit see every event), and the same event is also handed to
  the members subscribed to it, FIFO in publish order, as the backtest's in-process bus does:
  a member's handler never runs inside another's; the queue is drained by the task that
  published first.
- **No second delivery.** Messages carry the group's origin (``Tf-Origin``). A member's core
  subscription drops its own group's copies coming back from the server. A member's durable
  consumer still receives the JetStream copy (its consumer's position and ack are what a restart
  resumes from), but acks it without handling it again once the in-process handling of that
  message, and the storage of everything it published, are done. If that handling failed (or a
  manual-ack handler did not ack), the JetStream copy is handled as a redelivery would be.
- **Journaled first, where it matters.** A durable event published inside the group is written
  to the connection *before* the members see it, and its JetStream acknowledgement is awaited
  before the queue's dispatch returns, i.e. before the message that caused it is acked: the
  guarantee of the separate deployment ("an input is acked only once its outputs are stored")
  holds. The wait is deferred (publish_async), not skipped: one connection writes in order, so
  an intent's bytes reach the server before the approval it caused, and a group killed in
  between leaves the server the intent (handled again by the restarted risk gate, from its
  durable consumer) or nothing, never an approval without its intent. A publish that gets no
  acknowledgement is sent again with the same Nats-Msg-Id (JetStream keeps one copy) until one
  comes, in order.

Not delivered in-process (NATS only, as before): queue-group subscriptions (another process of
the queue may be the one NATS picks), and consumers that own their position (``start_seq``: the
recorder commits stream sequences with its rows).
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nats
import nats.errors
import nats.js.errors

from libs.common.bus import Delivery, Handler
from libs.common.config import NatsSettings
from libs.common.logging import LogOnce, get_logger
from libs.common.partition import nats_partition
from proto.base import DurableEvent, Event
from proto.subjects import PARTITION_KEYED, SPEC_BY_TEMPLATE, SubjectSpec, Transport, resolve, subject_matches

if TYPE_CHECKING:
    from libs.common.nats_bus import NatsBus

log = get_logger(__name__)

ORIGIN_HEADER = "Tf-Origin"
MSG_ID_HEADER = "Nats-Msg-Id"
ACK_TIMEOUT_S = 5.0  # a deferred JetStream ack not come by then: published again (same id)
MAX_WAITING = 100_000  # in-process outcomes kept per consumer for JetStream copies still to come


@dataclass(eq=False)
class LocalSubscription:
    """A member's subscription, as the group delivers to it in-process."""

    bus: NatsBus
    pattern: str
    handler: Handler
    wanted: frozenset[type[Event]] | None
    durable: bool
    manual_ack: bool
    every_partition: bool
    #: Nats-Msg-Id -> the in-process outcome (True: handled and its outputs stored), for the
    #: JetStream copy of the same message, which the member's consumer receives too.
    waiting: dict[str, asyncio.Future[bool]] = field(default_factory=dict)

    def takes(self, subject: str, spec: SubjectSpec) -> bool:
        """Its pattern matches, and (a partitioned replica's) the symbol is in its partitions."""
        if not subject_matches(self.pattern, subject):
            return False
        owned, count = self.bus.owned, self.bus.partitions
        if self.every_partition or owned is None or count <= 1 or spec.template not in PARTITION_KEYED:
            return True
        symbol = subject.split(".")[SPEC_BY_TEMPLATE[spec.template].tokens.index("{symbol}")]
        return nats_partition(symbol, count) in owned


class _LocalAcker:
    """A manual-ack handler's ack/nak of an in-process delivery: noted, and applied to the
    JetStream copy once the group's dispatch is done."""

    def __init__(self) -> None:
        self.acked: bool | None = None

    async def ack(self) -> None:
        self.acked = True

    async def nak(self, delay: float | None = None) -> None:
        self.acked = False

    async def in_progress(self) -> None:
        pass


@dataclass
class _Unsettled:
    """A durable publish made inside a dispatch: written, its acknowledgement not yet awaited."""

    bus: NatsBus
    subject: str
    stream: str | None
    event: DurableEvent
    ack: asyncio.Future[Any]


class ProcessGroup:
    """The services of one process: their shared connection and in-process delivery."""

    def __init__(self, name: str, settings: NatsSettings) -> None:
        self.name = name
        self.settings = settings
        # Unique per process start: after a restart, the dead group's messages are anybody's.
        self.origin = f"{name}/{os.getpid()}/{time.time_ns()}"
        self.members: list[NatsBus] = []
        self.nc: Any = None
        self.partitions = 1
        self._connecting = asyncio.Lock()
        self._subs: list[LocalSubscription] = []
        self._routes: dict[str, list[LocalSubscription]] = {}
        # (subject, event, headers, the futures of the consumers expecting its JetStream copy)
        self._queue: collections.deque[
            tuple[str, Event, Mapping[str, str] | None, dict[LocalSubscription, asyncio.Future[bool]]]
        ] = collections.deque()
        self._dispatcher: asyncio.Task[Any] | None = None
        self._unsettled: list[_Unsettled] = []
        self._outcomes: list[tuple[asyncio.Future[bool], bool]] = []
        self._log_once = LogOnce()
        self.stats: collections.Counter[str] = collections.Counter()

    # -- the connection ---------------------------------------------------------------------
    async def join(self, bus: NatsBus) -> None:
        """A member's connect: the group's connection, made by the first to ask."""
        from libs.common.nats_bus import connect_options, server_partitions

        async with self._connecting:
            if self.nc is None:
                self.nc = await nats.connect(**connect_options(self.settings, f"group:{self.name}", self))
                self.partitions = await server_partitions(self.nc)
        if bus not in self.members:
            self.members.append(bus)
        await bus.connected_on(self.nc, self.partitions)

    async def _on_error(self, exc: Exception) -> None:
        if self.members:  # said (and a slow consumer counted) once, not once per member
            await self.members[0]._on_error(exc)

    async def _on_disconnected(self) -> None:
        for bus in self.members:
            await bus._on_disconnected()

    async def _on_reconnected(self) -> None:
        for bus in self.members:
            await bus._on_reconnected()

    async def _on_closed(self) -> None:
        for bus in self.members:
            await bus._on_closed()

    async def close(self) -> None:
        """After every member closed its subscriptions: send what is buffered, then close."""
        if self.nc is None or self.nc.is_closed:
            return
        try:
            await self.nc.flush()
            await self.nc.drain()
        except Exception as exc:
            log.warning("group connection did not drain", error=repr(exc))

    # -- subscriptions ----------------------------------------------------------------------
    def add(self, sub: LocalSubscription) -> None:
        self._subs.append(sub)
        self._routes.clear()

    def remove(self, sub: LocalSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._routes.clear()

    def leave(self, bus: NatsBus) -> None:
        """A member closing: nothing more is delivered to it in-process."""
        self._subs = [s for s in self._subs if s.bus is not bus]
        self._routes.clear()

    def _route(self, subject: str, spec: SubjectSpec) -> list[LocalSubscription]:
        route = self._routes.get(subject)
        if route is None:
            route = self._routes[subject] = [s for s in self._subs if s.takes(subject, spec)]
        return route

    async def copy_handled(self, sub: LocalSubscription, headers: Mapping[str, str] | None) -> bool:
        """For a member's consumer receiving a JetStream copy of its group's own message: True
        when the in-process handling of it succeeded (and what it published is stored): ack it,
        do not handle it again. False: handle it as any message (as a redelivery would be)."""
        msg_id = headers.get(MSG_ID_HEADER) if headers else None
        found = sub.waiting.pop(msg_id, None) if msg_id else None
        if found is None:
            return False
        handled = await found
        self.stats["copies_acked" if handled else "copies_handled_again"] += 1
        return handled

    # -- publishing -------------------------------------------------------------------------
    async def publish(self, bus: NatsBus, subject: str, event: Event, spec: SubjectSpec) -> None:
        """A member's publish: written on the connection, then handed to the members that take it."""
        route = self._route(subject, spec)
        durable = spec.transport is Transport.JETSTREAM
        nested = self._dispatcher is not None and self._dispatcher is asyncio.current_task()
        if durable:
            assert isinstance(event, DurableEvent)
            msg_id = event.dedupe_key()
            expect = {  # before the write: the copy may come back before the dispatch
                sub: self._expect(sub, msg_id)
                for sub in route
                if sub.durable and (sub.wanted is None or type(event) in sub.wanted)
            }
            ack = await bus.publish_durable_deferred(subject, spec.stream, event)
            pending = _Unsettled(bus, subject, spec.stream, event, ack)
            if route:
                self._queue.append((subject, event, bus._base_headers, expect))
            if nested:  # awaited before the dispatch that caused it returns
                self._unsettled.append(pending)
                return
            await self._dispatch_if_idle()
            await self._settle_one(pending)
            return
        await bus.publish_core_now(subject, spec.wildcard, event)
        if route:
            self._queue.append((subject, event, bus._base_headers, {}))
            if not nested:
                await self._dispatch_if_idle()

    def _expect(self, sub: LocalSubscription, msg_id: str) -> asyncio.Future[bool]:
        if len(sub.waiting) >= MAX_WAITING:  # copies that never came (a consumer made later)
            sub.waiting.pop(next(iter(sub.waiting)))
        found = sub.waiting[msg_id] = asyncio.get_running_loop().create_future()
        return found

    async def _dispatch_if_idle(self) -> None:
        """Drain the queue in this task unless another already does (it then delivers ours)."""
        if self._dispatcher is not None:
            return
        self._dispatcher = asyncio.current_task()
        try:
            while self._queue or self._unsettled or self._outcomes:
                while self._queue:
                    await self._deliver(*self._queue.popleft())
                unsettled, self._unsettled = self._unsettled, []
                for pending in unsettled:
                    await self._settle_one(pending)
                # Only now (what the handlers published is stored) may their inputs' JetStream
                # copies be acked.
                outcomes, self._outcomes = self._outcomes, []
                for found, handled in outcomes:
                    if not found.done():
                        found.set_result(handled)
        finally:
            self._dispatcher = None

    async def _deliver(
        self,
        subject: str,
        event: Event,
        headers: Mapping[str, str] | None,
        expect: dict[LocalSubscription, asyncio.Future[bool]],
    ) -> None:
        spec = resolve(subject)
        assert spec is not None
        for sub in self._route(subject, spec):
            if sub.wanted is not None and type(event) not in sub.wanted:
                continue
            bus = sub.bus
            bus.hooks.on_received(spec.wildcard, 1, event.ts_init)
            acker = _LocalAcker() if sub.manual_ack else None
            bus.in_hand += 1
            handled = False
            try:
                await sub.handler(Delivery(subject, event, headers, acker=acker))
                handled = acker.acked is True if acker is not None else True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                bus.hooks.on_handler_error(subject, exc)
                if not sub.durable:  # lost on core NATS too: counted and kept as a dead letter
                    await bus.handler_failed(subject, event, headers)
            finally:
                bus.in_hand -= 1
                bus.handled += 1
            self.stats["delivered"] += 1
            if (found := expect.pop(sub, None)) is not None:
                self._outcomes.append((found, handled))
        # a consumer that left meanwhile: its copy (if it comes) is handled as any message
        self._outcomes += [(found, False) for found in expect.values()]

    async def _settle_one(self, pending: _Unsettled) -> None:
        """Wait for a deferred publish's acknowledgement; without one, publish it again (same
        Nats-Msg-Id) until the stream has it."""
        try:
            reply = await asyncio.wait_for(asyncio.shield(pending.ack), ACK_TIMEOUT_S)
            if getattr(reply, "stream", None):
                return
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            if self._log_once.first("deferred", type(exc).__name__):
                log.warning("deferred publish not acknowledged: sending it again", error=repr(exc))
        self.stats["published_again"] += 1
        delay = 0.2
        while True:
            try:
                await pending.bus.publish_durable_now(pending.subject, pending.stream, pending.event)
                return
            except Exception as exc:  # kept, in order, until the bus takes it (never dropped)
                log.warning("durable publish failed: retrying", subject=pending.subject, error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def status(self) -> dict[str, Any]:
        return {
            "group": self.name,
            "members": [b.service for b in self.members],
            "origin": self.origin,
            **dict(self.stats),
        }


def member_order(members: Sequence[str]) -> list[str]:
    """The order a group starts its members in: consumers first, the md-gateway (the producer
    of everything) last, as `up` starts the fleet."""
    return sorted(members, key=lambda m: m == "md-gateway")

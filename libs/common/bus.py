"""The Bus: publish typed events on subjects, subscribe with handlers.

Two implementations share this interface: ``NatsBus`` (libs/common/nats_bus.py) for the fleet and
``InProcessBus`` here, synchronous and deterministic, for the backtest and unit tests.
"""

from __future__ import annotations

import abc
import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from libs.common import codec
from libs.common.counts import Counts
from proto.base import Event
from proto.subjects import CATALOG, SubjectSpec, UnknownSubject, overlaps, resolve, subject_matches, types_on

E = TypeVar("E", bound=Event)
#: what a subscription delivers: one event type, several, or (None) whatever its subjects carry
Types = type[Event] | tuple[type[Event], ...] | None


class Delivery(msgspec.Struct, Generic[E], gc=False):
    """One event handed to a handler, of a type the subscription asked for (``Delivery[Fill]``).
    ``ack`` matters only for JetStream deliveries with ``manual_ack``; otherwise the bus acks
    after the handler returns. A msgspec Struct because one is built per event received: its
    constructor runs in C (a dataclass's in Python)."""

    subject: str
    event: E
    headers: Mapping[str, str] | None = None
    stream: str | None = None
    seq: int = 0
    redelivered: bool = False
    acker: Any = None

    async def ack(self) -> None:
        if self.acker is not None:
            await self.acker.ack()

    async def nak(self, delay_s: float | None = None) -> None:
        if self.acker is not None:
            await self.acker.nak(delay=delay_s)

    async def in_progress(self) -> None:
        """Still working on it: JetStream restarts the ack wait instead of redelivering."""
        if self.acker is not None:
            await self.acker.in_progress()


Handler = Callable[[Delivery[Any]], Awaitable[None]]
#: A handler that does its common work without awaiting: it returns None, or, when it has
#: something to wait for, an awaitable (a coroutine) that the bus awaits.
SyncHandler = Callable[[Delivery[Any]], Awaitable[None] | None]


class BusHooks(Protocol):
    """What the runtime wants to know about traffic (metrics, dead letters, handler errors)."""

    def on_received(self, pattern: str, count: int, ts_init: int) -> None:
        """``ts_init`` of the first event: the hook measures latency from it (when it samples)."""

    def on_published(self, pattern: str, count: int) -> None: ...
    async def on_dropped(
        self, subject: str, reason: str, detail: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None: ...
    def on_handler_error(self, subject: str, exc: BaseException) -> None: ...


class NullHooks:
    def on_received(self, pattern: str, count: int, ts_init: int) -> None:
        pass

    def on_published(self, pattern: str, count: int) -> None:
        pass

    async def on_dropped(
        self, subject: str, reason: str, detail: str, payload: bytes, headers: Mapping[str, str] | None
    ) -> None:
        pass

    def on_handler_error(self, subject: str, exc: BaseException) -> None:
        raise exc


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


Responder = Callable[[Event], Awaitable[Event]]


def wanted_types(pattern: str, types: Types) -> frozenset[type[Event]] | None:
    """The types a subscription delivers (None: every type its subjects carry). Each must be one
    the catalog carries on a subject the pattern matches: asking for one it never carries is a
    programming error, raised at subscribe time rather than silently never called."""
    if types is None:
        return None
    wanted = frozenset(types) if isinstance(types, tuple) else frozenset({types})
    if not any(overlaps(pattern, entry) for entry in CATALOG):
        raise UnknownSubject(f"pattern {pattern!r} matches no subject of the catalog (proto/subjects.py)")
    never = wanted - types_on(pattern)
    if never:
        names = ", ".join(sorted(t.__name__ for t in never))
        raise UnknownSubject(f"{names} never travels on {pattern!r} (proto/subjects.py)")
    return wanted


class Bus(abc.ABC):
    @abc.abstractmethod
    async def publish(self, subject: str, event: Event) -> None: ...

    @abc.abstractmethod
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
    ) -> Subscription: ...

    async def flush(self, roundtrip: bool = False) -> None:  # noqa: B027 - optional for buses without buffers
        """Send whatever micro-batches are waiting."""

    async def request(self, subject: str, event: Event, timeout_s: float) -> Event | None:
        """Ask whoever serves ``subject`` and wait for one answer; None when nobody answers in
        time (the caller decides what not knowing means)."""
        raise NotImplementedError

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        """Answer requests on ``subject`` with what ``responder`` returns."""
        raise NotImplementedError

    @abc.abstractmethod
    async def last(self, subject: str) -> tuple[Event, int] | None:
        """The last event stored on a durable subject and its stream sequence (None: none kept,
        or not durable): what a restarting service rebuilds its state from."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def checked_spec(subject: str, event: Event) -> SubjectSpec:
    """The catalog entry for a publish; a subject or type outside the catalog is a programming error."""
    spec = resolve(subject)
    if spec is None:
        raise UnknownSubject(f"subject {subject!r} is not in the catalog (proto/subjects.py)")
    if type(event) not in spec.event_types:
        raise UnknownSubject(f"{type(event).__name__} may not be published on {subject!r} ({spec.template})")
    return spec


class _InProcessSubscription:
    def __init__(
        self,
        bus: InProcessBus,
        pattern: str,
        handler: Callable[[Delivery[Any]], Any],
        types: frozenset[type[Event]] | None,
        sync: bool = False,
    ) -> None:
        self.bus, self.pattern, self.handler, self.types, self.sync = bus, pattern, handler, types, sync

    async def unsubscribe(self) -> None:
        self.bus._remove(self)


#: One subject's subscribers for one event type, in subscription order: (handler, is it sync).
_Targets = tuple[tuple[Callable[[Delivery[Any]], Any], bool], ...]


class _Route:
    """A subject's catalog entry and its subscribers, by event type (what ``publish`` reads per
    event: built once per subject and type, dropped when the subscriptions change)."""

    __slots__ = ("by_type", "durable", "spec", "subs", "types", "wildcard")

    def __init__(self, spec: SubjectSpec, subs: list[_InProcessSubscription]) -> None:
        self.spec, self.subs, self.types = spec, subs, spec.event_types
        self.wildcard, self.durable = spec.wildcard, spec.stream is not None
        self.by_type: dict[type[Event], _Targets] = {}

    def targets(self, kind: type[Event]) -> _Targets:
        found = self.by_type.get(kind)
        if found is None:
            found = self.by_type[kind] = tuple(
                (s.handler, s.sync) for s in self.subs if s.types is None or kind in s.types
            )
        return found


class _InProcessResponder:
    def __init__(self, bus: InProcessBus, subject: str) -> None:
        self.bus, self.subject = bus, subject

    async def unsubscribe(self) -> None:
        self.bus._responders.pop(self.subject, None)


def checked_service_subject(subject: str) -> SubjectSpec:
    """A subject served with request/reply must be in the catalog like any other."""
    spec = resolve(subject)
    if spec is None:
        raise UnknownSubject(f"subject {subject!r} is not in the catalog (proto/subjects.py)")
    return spec


class InProcessBus(Bus):
    """Synchronous and deterministic: events are dispatched FIFO in publish order, each to its
    subscribers in subscription order, before ``publish`` of the first event returns.

    ``roundtrip=True`` encodes and decodes every event, proving the wire format in tests; the
    backtest passes objects straight through.
    """

    def __init__(self, hooks: BusHooks | None = None, roundtrip: bool = False) -> None:
        self.hooks: BusHooks = hooks or NullHooks()
        self.roundtrip = roundtrip
        self._subs: list[_InProcessSubscription] = []
        self._routes: dict[str, _Route] = {}
        self._queue: collections.deque[tuple[str, Event]] = collections.deque()
        self._dispatching = False
        self.published: collections.Counter[str] = Counts()  # one count per event: see Counts
        self._last: dict[str, tuple[Event, int]] = {}
        self._responders: dict[str, Responder] = {}

    async def last(self, subject: str) -> tuple[Event, int] | None:
        return self._last.get(subject)

    async def serve(self, subject: str, responder: Responder) -> Subscription:
        checked_service_subject(subject)
        self._responders[subject] = responder
        return _InProcessResponder(self, subject)

    async def request(self, subject: str, event: Event, timeout_s: float) -> Event | None:
        checked_spec(subject, event)
        responder = self._responders.get(subject)
        if responder is None:
            return None
        try:
            return await asyncio.wait_for(responder(event), timeout_s)
        except TimeoutError:
            return None

    # The per-event path (a backtest publishes every tick here): the subject's route is cached
    # (its catalog entry and, per event type, its subscribers), one Delivery is shared by every
    # subscriber of the event (none changes it), and a sync subscriber (the backtest's ledger) is
    # called without a coroutine.
    def _accept(self, subject: str, event: Event) -> tuple[_Route, Event]:
        """What a publish does before dispatching: the catalog's checks, the counts, the last
        event of a durable subject, the optional round trip. The route and the event to deliver."""
        route = self._routes.get(subject) or self._route(subject)
        if type(event) not in route.types:
            checked_spec(subject, event)  # raises, saying why
        if route.durable:
            self._last[subject] = (event, sum(self.published.values()) + 1)
        if self.roundtrip:
            decoded = codec.decode(codec.encode(event))
            assert isinstance(decoded, Event)
            event = decoded
        self.published[route.wildcard] += 1
        self.hooks.on_published(route.wildcard, 1)
        return route, event

    async def publish(self, subject: str, event: Event) -> None:
        route, event = self._accept(subject, event)
        if self._dispatching:  # behind the event being dispatched (FIFO over all subjects)
            self._queue.append((subject, event))
            return
        await self._settle(subject, event, route, None)

    async def _settle(
        self, subject: str, event: Event, route: _Route, more: Iterator[tuple[str, Event]] | None
    ) -> None:
        """Dispatch from outside any dispatch: the event (behind what a handler error that
        escaped, NullHooks raising, left queued), what it causes, then ``more``."""
        if self._queue:
            self._queue.append((subject, event))
            subject, event = self._queue.popleft()
            route = self._routes.get(subject) or self._route(subject)
        self._dispatching = True
        try:
            await self._dispatch(subject, event, route, more)
        finally:
            self._dispatching = False

    async def _dispatch(
        self, subject: str, event: Event, route: _Route, more: Iterator[tuple[str, Event]] | None
    ) -> None:
        """The event to its subscribers, then every event queued meanwhile, until none is left;
        then, with ``more``, the next of its items (accepted as ``publish`` does), and so on. One
        loop and one coroutine for a whole stream: a coroutine per event cost the backtest about
        a tenth of its time per tick."""
        queue, on_error, routes = self._queue, self.hooks.on_handler_error, self._routes
        while True:
            kind = type(event)
            targets = route.by_type.get(kind) or route.targets(kind)
            if targets:
                delivery = Delivery(subject, event)
                for handler, sync in targets:
                    try:
                        if sync:
                            pending = handler(delivery)
                            if pending is not None:
                                await pending
                        else:
                            await handler(delivery)
                    except Exception as exc:
                        on_error(subject, exc)
            if queue:
                subject, event = queue.popleft()
                route = routes.get(subject) or self._route(subject)
                continue
            if more is None:
                return
            item = next(more, None)
            if item is None:
                return
            subject, event = item
            found = routes.get(subject)
            if found is None or found.durable or self.roundtrip or type(event) not in found.types:
                route, event = self._accept(subject, event)
            else:  # ``_accept``'s common case, inline: a core subject, a type it carries
                route = found
                self.published[route.wildcard] += 1
                self.hooks.on_published(route.wildcard, 1)

    async def publish_all(self, items: Iterable[tuple[str, Event]]) -> None:
        """``publish`` of each (subject, event) in turn: each event, and everything it causes, is
        dispatched before the next item is taken from ``items`` (which may read what those
        consequences changed: the backtest's replay sets its clock there). One coroutine for the
        whole stream instead of one per event (``_dispatch`` takes the items itself)."""
        if self._dispatching:  # from a handler: each queued behind the current event
            for subject, event in items:
                await self.publish(subject, event)
            return
        stream = iter(items)
        first = next(stream, None)
        if first is not None:
            route, event = self._accept(*first)
            await self._settle(first[0], event, route, stream)

    def _route(self, subject: str) -> _Route:
        """The subject's route (built on its first event, and again after a (un)subscribe)."""
        spec = resolve(subject)
        if spec is None:
            raise UnknownSubject(f"subject {subject!r} is not in the catalog (proto/subjects.py)")
        route = self._routes[subject] = _Route(
            spec, [s for s in self._subs if subject_matches(s.pattern, subject)]
        )
        return route

    def subscribe_sync(self, pattern: str, handler: SyncHandler, *, types: Types = None) -> Subscription:
        """A subscriber that does its common work without awaiting (the backtest's ledger, the
        services' per-tick handlers: ``Runtime.subscribe(..., sync=True)``): called as it is, no
        coroutine per event; what it returns, when not None, is awaited before the next
        subscriber is called. Delivery order is as ``subscribe``'s."""
        sub = _InProcessSubscription(self, pattern, handler, wanted_types(pattern, types), sync=True)
        self._subs.append(sub)
        self._routes.clear()
        return sub

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
    ) -> Subscription:
        sub = _InProcessSubscription(self, pattern, handler, wanted_types(pattern, types))
        self._subs.append(sub)
        self._routes.clear()
        return sub

    def _remove(self, sub: _InProcessSubscription) -> None:
        self._subs.remove(sub)
        self._routes.clear()

    async def close(self) -> None:
        self._subs.clear()
        self._routes.clear()

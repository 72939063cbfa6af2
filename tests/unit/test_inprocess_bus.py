"""The in-process bus: deterministic FIFO dispatch, NATS wildcard semantics, errors isolated."""

from __future__ import annotations

import pytest

from libs.common.bus import Delivery, InProcessBus, UnknownSubject
from libs.common.clock import SimClock
from proto.market import Quote, Trade
from proto.subjects import subject_matches
from tests.kit import stubs
from tests.kit.samples import T0


def _quote(symbol: str, i: int = 0) -> Quote:
    return stubs.quote(symbol, T0 + i, 10.0, 10.01, 1, 1)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("md.quote.*", "md.quote.IBM", True),
        ("md.quote.*", "md.quote.IBM.x", False),
        ("md.>", "md.quote.IBM", True),
        ("md.>", "md", False),
        ("md.*.IBM", "md.trade.IBM", True),
        ("exec.fill.IBM", "exec.fill.BAC", False),
    ],
)
def test_wildcards_follow_nats(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


async def test_dispatch_is_fifo_and_breadth_first() -> None:
    bus = InProcessBus(roundtrip=True)
    seen: list[str] = []

    async def first(d: Delivery) -> None:
        seen.append(f"first:{d.subject}")
        if d.subject == "md.quote.A":
            await bus.publish("md.trade.A", Trade(ts_event=T0, ts_init=T0, symbol="A", price=10.0, size=1))
            await bus.publish("md.quote.B", _quote("B"))

    async def second(d: Delivery) -> None:
        seen.append(f"second:{d.subject}")

    await bus.subscribe("md.>", first)
    await bus.subscribe("md.quote.*", second)
    await bus.publish("md.quote.A", _quote("A"))
    # Events published by a handler wait until the current event reached every subscriber.
    assert seen == [
        "first:md.quote.A",
        "second:md.quote.A",
        "first:md.trade.A",
        "first:md.quote.B",
        "second:md.quote.B",
    ]


async def test_a_failing_handler_does_not_stop_the_others() -> None:
    errors: list[str] = []

    class Hooks:
        def on_received(self, *a: object) -> None: ...
        def on_published(self, *a: object) -> None: ...
        async def on_dropped(self, *a: object) -> None: ...
        def on_handler_error(self, subject: str, exc: BaseException) -> None:
            errors.append(f"{subject}:{exc}")

    bus = InProcessBus(hooks=Hooks())  # type: ignore[arg-type]
    got: list[int] = []

    async def broken(d: Delivery) -> None:
        raise RuntimeError("boom")

    async def fine(d: Delivery) -> None:
        got.append(d.event.ts_event)

    await bus.subscribe("md.quote.*", broken)
    await bus.subscribe("md.quote.*", fine)
    for i in range(3):
        await bus.publish("md.quote.X", _quote("X", i))
    assert got == [T0, T0 + 1, T0 + 2]
    assert errors == ["md.quote.X:boom"] * 3


async def test_publishing_outside_the_catalog_is_refused() -> None:
    bus = InProcessBus()
    with pytest.raises(UnknownSubject):
        await bus.publish("md.nonsense.IBM", _quote("IBM"))
    with pytest.raises(UnknownSubject):
        await bus.publish("md.trade.IBM", _quote("IBM"))


def test_sim_clock_never_goes_backwards() -> None:
    clock = SimClock(100)
    clock.set(50)
    assert clock.now_ns() == 100
    clock.advance(5)
    assert clock.now_ns() == 105
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_publish_all_settles_each_event_before_taking_the_next() -> None:
    # The backtest's replay: one stream of events, each dispatched with what it causes (FIFO,
    # breadth first, as publish) before the iterator is asked for the next one.
    bus = InProcessBus()
    seen: list[str] = []

    async def first(d: Delivery) -> None:
        seen.append(f"first:{d.subject}")
        if d.subject == "md.quote.A":
            await bus.publish("md.trade.A", Trade(ts_event=T0, ts_init=T0, symbol="A", price=10.0, size=1))

    def ledger(d: Delivery) -> None:  # a sync subscriber: called in its place, no coroutine
        seen.append(f"sync:{d.subject}")

    await bus.subscribe("md.>", first)
    bus.subscribe_sync("md.quote.*", ledger, types=Quote)

    def stream():  # type: ignore[no-untyped-def]
        for symbol in "AB":
            seen.append(f"next:{symbol}")
            yield f"md.quote.{symbol}", _quote(symbol)

    await bus.publish_all(stream())
    assert seen == [
        "next:A",
        "first:md.quote.A",
        "sync:md.quote.A",
        "first:md.trade.A",
        "next:B",
        "first:md.quote.B",
        "sync:md.quote.B",
    ]
    assert bus.published == {"md.quote.*": 2, "md.trade.*": 1}
    with pytest.raises(UnknownSubject):
        await bus.publish_all([("md.trade.IBM", _quote("IBM"))])


async def test_a_sync_subscriber_s_awaitable_is_awaited_before_the_next_subscriber() -> None:
    # Runtime.subscribe(..., sync=True): a per-tick handler returns None on the common tick and a
    # coroutine when it has something to wait for; the bus awaits it in the subscriber's place.
    import asyncio

    bus = InProcessBus()
    seen: list[str] = []
    gate = asyncio.Event()

    async def slow(symbol: str) -> None:
        await gate.wait()  # really suspends: the next subscriber must still wait for it
        seen.append(f"awaited:{symbol}")
        await bus.publish("md.trade.A", Trade(ts_event=T0, ts_init=T0, symbol="A", price=10.0, size=1))

    def per_tick(d: Delivery):  # type: ignore[no-untyped-def]
        seen.append(f"sync:{d.subject}")
        return slow(d.event.symbol) if d.event.symbol == "B" else None

    async def after(d: Delivery) -> None:
        seen.append(f"after:{d.subject}")

    bus.subscribe_sync("md.quote.*", per_tick, types=Quote)
    await bus.subscribe("md.>", after)
    task = asyncio.ensure_future(bus.publish_all([(f"md.quote.{s}", _quote(s)) for s in "AB"]))
    for _ in range(5):
        await asyncio.sleep(0)
    assert seen == ["sync:md.quote.A", "after:md.quote.A", "sync:md.quote.B"]
    gate.set()
    await task
    assert seen[3:] == ["awaited:B", "after:md.quote.B", "after:md.trade.A"]


async def test_a_subscription_made_during_dispatch_gets_the_events_after() -> None:
    bus = InProcessBus()
    late: list[int] = []

    async def late_one(d: Delivery) -> None:
        late.append(d.event.ts_event)

    async def subscriber(d: Delivery) -> None:
        if d.event.ts_event == T0:
            await bus.subscribe("md.quote.*", late_one)
            await bus.publish("md.quote.X", _quote("X", 1))  # queued: the new subscriber sees it

    await bus.subscribe("md.quote.*", subscriber)
    await bus.publish_all([("md.quote.X", _quote("X", 0)), ("md.quote.X", _quote("X", 2))])
    assert late == [T0 + 1, T0 + 2]

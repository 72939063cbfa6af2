"""Typed edges from the catalog: a subscription names the event types its handler takes and gets
only those; emit finds an event's subject by its type and fields; asking for a type a pattern can
never carry, or emitting one with no subject of its own, is a programming error said at once."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.bus import Delivery, InProcessBus
from libs.common.clock import SimClock
from libs.common.config import load_settings
from libs.common.runtime import Runtime
from proto.control import SyncProbe
from proto.execution import Fill, OrderEvent
from proto.market import Quote, Trade
from proto.subjects import UnknownSubject, subject_of, subject_token, types_on
from tests.kit import stubs
from tests.kit.samples import sample_events


def test_every_emittable_event_finds_its_catalog_subject_from_its_fields() -> None:
    assert subject_of(stubs.quote("BRK.B")) == "md.quote.BRK_B"
    assert subject_of(stubs.vector(timeframe="5m", symbol="BAC")) == "feat.5m.BAC"
    assert subject_of(stubs.prediction(horizon="15m")) == "sig.fast.15m.IBM"
    assert subject_of(stubs.control("set_mode", mode="LIVE")) == "ctl.set_mode"
    for event in sample_events():
        if type(event) is SyncProbe:  # a request: sent on the subject of whom it asks
            with pytest.raises(UnknownSubject, match="no single catalog subject"):
                subject_of(event)
            continue
        subject = subject_of(event)
        assert all(subject_token(t) == t for t in subject.split("."))
        assert type(event) in types_on(subject)


def test_types_on_a_pattern_come_from_the_catalog() -> None:
    assert types_on("exec.>") == {OrderEvent, Fill, *types_on("exec.position"), *types_on("exec.broker")}
    assert types_on("md.quote.*") == {Quote}
    assert types_on("feat.1m.*") == types_on("feat.*.*")


async def test_a_subscription_gets_only_the_types_it_asked_for() -> None:
    bus = InProcessBus(roundtrip=True)
    fills: list[Delivery[Fill]] = []
    every: list[Delivery[Any]] = []

    async def on_fill(d: Delivery[Fill]) -> None:
        fills.append(d)

    async def on_any(d: Delivery[Any]) -> None:
        every.append(d)

    await bus.subscribe("exec.>", on_fill, types=Fill)
    await bus.subscribe("exec.>", on_any)
    await bus.publish("exec.order.IBM", stubs.order_event())
    await bus.publish("exec.fill.IBM", stubs.fill(exec_id="e1"))
    assert [type(d.event) for d in fills] == [Fill] and fills[0].event.exec_id == "e1"
    assert [type(d.event) for d in every] == [OrderEvent, Fill]


async def test_asking_for_a_type_the_pattern_never_carries_fails_at_subscribe() -> None:
    bus = InProcessBus()

    async def handler(d: Delivery[Any]) -> None:
        pass

    with pytest.raises(UnknownSubject, match=r"Fill never travels on 'md\.>'"):
        await bus.subscribe("md.>", handler, types=(Quote, Fill))
    with pytest.raises(UnknownSubject, match="matches no subject"):
        await bus.subscribe("nothing.>", handler, types=Quote)


async def test_the_runtime_emits_and_dispatches_a_table_of_typed_handlers_in_order() -> None:
    bus = InProcessBus()
    rt = Runtime("test", load_settings(None), bus=bus, clock=SimClock(0))
    seen: list[str] = []

    async def on_quote(d: Delivery[Quote]) -> None:
        seen.append(f"quote {d.event.bid}")

    async def on_trade(d: Delivery[Trade]) -> None:
        seen.append(f"trade {d.event.price}")

    await rt.subscribe("md.>", {Quote: on_quote, Trade: on_trade})
    await rt.emit(stubs.quote(bid=99.5))
    await rt.emit_all([stubs.trade(price=99.51), stubs.quote(bid=99.52)])
    assert seen == ["quote 99.5", "trade 99.51", "quote 99.52"]
    assert rt.emitted == {"Quote": 2, "Trade": 1}
    assert await rt.last("exec.position", Fill) is None  # nothing stored there, and not that type

"""A process group's delivery (libs/common/group.py) on a real nats-server: members take each
other's events in-process exactly once, everything still reaches NATS, a member's durable
consumer acks its JetStream copy without handling it twice (and handles it again when the
in-process handling failed), and queue groups stay NATS-only."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from libs.common.bus import Delivery, NullHooks
from libs.common.config import NatsSettings
from libs.common.group import ProcessGroup
from libs.common.nats_bus import NatsBus
from proto.execution import Fill
from proto.market import Quote
from tests.helpers import await_until
from tests.kit import stubs
from tests.kit.samples import T0


def _quote(i: int, symbol: str) -> Quote:
    return stubs.quote(symbol, T0 + i, 100.0 + i / 1000, 100.01 + i / 1000, 1, 1)


def _fill(exec_id: str, symbol: str) -> Fill:
    return stubs.fill(ts=T0, exec_id=exec_id, client_order_id=f"c-{exec_id}", price=182.07, symbol=symbol)


class Hooks(NullHooks):
    """A runtime's part: a handler that raises is counted, not re-raised."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_handler_error(self, subject: str, exc: BaseException) -> None:
        self.errors.append(f"{subject}: {exc}")


async def _members(url: str, *names: str) -> tuple[ProcessGroup, list[NatsBus]]:
    group = ProcessGroup("+".join(names), NatsSettings(url=url))
    buses = [NatsBus(NatsSettings(url=url), name, hooks=Hooks(), group=group) for name in names]
    for bus in buses:
        await bus.connect()
    await buses[0].ensure_streams()
    return group, buses


async def _outsider(url: str) -> NatsBus:
    bus = NatsBus(NatsSettings(url=url), f"outsider-{uuid.uuid4().hex[:6]}")
    await bus.connect()
    return bus


async def _close(group: ProcessGroup, *buses: NatsBus) -> None:
    for bus in buses:
        await bus.close()
    await group.close()


async def test_members_take_core_events_in_process_once_and_nats_still_carries_them(nats_url: str) -> None:
    group, (producer, consumer) = await _members(nats_url, "features", "fastlane")
    outsider = await _outsider(nats_url)
    symbol = f"G{uuid.uuid4().hex[:6].upper()}"
    inside: list[Quote] = []
    outside: list[Quote] = []
    order: list[str] = []

    async def on_inside(d: Delivery[Any]) -> None:
        order.append("handled")
        inside.append(d.event)

    async def on_outside(d: Delivery[Any]) -> None:
        outside.append(d.event)

    await consumer.subscribe(f"md.quote.{symbol}", on_inside)
    await outsider.subscribe(f"md.quote.{symbol}", on_outside)
    await consumer.barrier()
    await outsider.barrier()
    sent = [_quote(i, symbol) for i in range(200)]
    for q in sent:
        await producer.publish(f"md.quote.{symbol}", q)
        order.append("published")
    # in-process: each handled before its publish returned, in order
    assert inside == sent and order[:2] == ["handled", "published"]
    await await_until(lambda: len(outside) == 200, what="the outsider's copies")
    assert outside == sent
    await producer.flush(roundtrip=True)
    await asyncio.sleep(0.2)  # the group's own copies came back from the server: dropped
    assert inside == sent
    assert group.stats["delivered"] == 200
    await _close(group, producer, consumer)
    await outsider.close()


async def test_a_durable_copy_is_acked_not_handled_again_unless_the_handling_failed(nats_url: str) -> None:
    group, (producer, consumer) = await _members(nats_url, "execution", "risk")
    symbol = f"D{uuid.uuid4().hex[:6].upper()}"
    handled: list[str] = []
    fail_once = {"bad-1"}

    async def on_fill(d: Delivery[Any]) -> None:
        exec_id = d.event.exec_id
        handled.append(f"{exec_id}{'(copy)' if d.stream else ''}")
        if exec_id in fail_once:
            fail_once.discard(exec_id)
            raise RuntimeError("the first handling fails")

    durable = f"group-test-{uuid.uuid4().hex[:6]}"
    await consumer.subscribe(f"exec.fill.{symbol}", on_fill, durable=durable, new_only=True)
    await consumer.barrier()
    for exec_id in ("ok-1", "bad-1", "ok-2"):
        await producer.publish(f"exec.fill.{symbol}", _fill(exec_id, symbol))
    # ok-1 and ok-2 in-process once; bad-1 failed in-process, then handled from its JetStream copy
    await await_until(lambda: "bad-1(copy)" in handled, what="the failed one handled again")

    async def drained() -> bool:
        info = await consumer.js.consumer_info("EXEC", durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    deadline = asyncio.get_running_loop().time() + 10
    while not await drained():
        assert asyncio.get_running_loop().time() < deadline, "the copies were not all acked"
        await asyncio.sleep(0.05)
    assert handled == ["ok-1", "bad-1", "ok-2", "bad-1(copy)"]
    assert group.stats["copies_acked"] == 2 and group.stats["copies_handled_again"] == 1
    # everything is stored once in the stream
    last = await consumer.js.get_last_msg("EXEC", f"exec.fill.{symbol}")
    assert last is not None
    await _close(group, producer, consumer)


async def test_a_queue_group_member_takes_from_nats_only(nats_url: str) -> None:
    group, (producer, consumer) = await _members(nats_url, "md-gateway", "sentiment")
    symbol = f"Q{uuid.uuid4().hex[:6].upper()}"
    got: list[Quote] = []

    async def on_quote(d: Delivery[Any]) -> None:
        got.append(d.event)

    await consumer.subscribe(f"md.quote.{symbol}", on_quote, queue="workers")
    await consumer.barrier()
    await producer.publish(f"md.quote.{symbol}", _quote(1, symbol))
    assert got == []  # not in-process: NATS picks which worker of the queue takes it
    await await_until(lambda: len(got) == 1, what="the queue's copy from NATS")
    assert group.stats["delivered"] == 0
    await _close(group, producer, consumer)

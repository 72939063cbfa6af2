"""NatsBus on a real nats-server: core and batched delivery, JetStream dedupe, durable redelivery."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from libs.common import codec
from libs.common.bus import Delivery
from libs.common.config import NatsSettings
from libs.common.localinfra import start_nats
from libs.common.nats_bus import NatsBus
from proto.execution import Fill
from proto.market import Quote
from tests.helpers import await_until
from tests.kit import stubs
from tests.kit.samples import T0


def _quote(i: int, symbol: str = "IBM") -> Quote:
    return stubs.quote(symbol, T0 + i, 100.0 + i / 1000, 100.01 + i / 1000, 1, 1)


def _fill(exec_id: str) -> Fill:
    return stubs.fill(ts=T0, exec_id=exec_id, client_order_id="c1", price=182.07)


async def _bus(url: str, batching: bool = False) -> NatsBus:
    bus = NatsBus(
        NatsSettings(url=url, batch_max=100, batch_linger_ms=1),
        f"test-{uuid.uuid4().hex[:6]}",
        batching=batching,
    )
    await bus.connect()
    await bus.ensure_streams()
    return bus


async def test_core_events_arrive_decoded_and_in_order(nats_url: str) -> None:
    pub, sub = await _bus(nats_url), await _bus(nats_url)
    got: list[Quote] = []

    async def on_quote(d: Delivery) -> None:
        got.append(d.event)  # type: ignore[arg-type]

    symbol = f"U{uuid.uuid4().hex[:6].upper()}"
    await sub.subscribe(f"md.quote.{symbol}", on_quote)
    await sub.barrier()
    sent = [_quote(i, symbol) for i in range(500)]
    for q in sent:
        await pub.publish(f"md.quote.{symbol}", q)
    await pub.flush()
    await await_until(lambda: len(got) == 500, what="500 quotes")
    assert got == sent
    await pub.close()
    await sub.close()


async def test_micro_batching_packs_many_events_per_message(nats_url: str) -> None:
    pub = await _bus(nats_url, batching=True)
    sub = await _bus(nats_url)
    raw = await _bus(nats_url)  # counts NATS messages, not events
    messages = 0
    events: list[Quote] = []

    async def count_raw(msg: object) -> None:
        nonlocal messages
        messages += 1

    async def on_quote(d: Delivery) -> None:
        events.append(d.event)  # type: ignore[arg-type]

    symbol = f"B{uuid.uuid4().hex[:6].upper()}"
    await raw.nc.subscribe(f"md.quote.{symbol}", cb=count_raw)  # type: ignore[union-attr]
    await sub.subscribe(f"md.quote.{symbol}", on_quote)
    await raw.barrier()
    await sub.barrier()
    sent = [_quote(i, symbol) for i in range(1000)]
    for q in sent:
        await pub.publish(f"md.quote.{symbol}", q)
    await pub.flush()
    await await_until(lambda: len(events) == 1000, what="all batched quotes")
    assert events == sent
    assert messages == 10  # batch_max=100
    await raw.close()
    await pub.close()
    await sub.close()


async def test_jetstream_drops_a_republished_event(nats_url: str) -> None:
    bus = await _bus(nats_url)
    exec_id = f"dup-{uuid.uuid4().hex}"
    info_before = await bus.js.stream_info("EXEC")
    await bus.publish("exec.fill.IBM", _fill(exec_id))
    await bus.publish("exec.fill.IBM", _fill(exec_id))  # a republish after a "crash"
    info_after = await bus.js.stream_info("EXEC")
    assert info_after.state.messages - info_before.state.messages == 1
    await bus.close()


async def test_durable_consumer_redelivers_until_the_handler_succeeds(nats_url: str) -> None:
    bus = await _bus(nats_url)
    durable = f"t-{uuid.uuid4().hex[:8]}"
    attempts: list[bool] = []
    done = asyncio.Event()

    async def flaky(d: Delivery) -> None:
        if d.event.exec_id != marker:  # type: ignore[attr-defined]
            return
        attempts.append(d.redelivered)
        if len(attempts) < 3:
            raise RuntimeError("transient")
        done.set()

    class Hooks:
        def on_received(self, *a: object) -> None: ...
        def on_published(self, *a: object) -> None: ...
        async def on_dropped(self, *a: object) -> None: ...
        def on_handler_error(self, subject: str, exc: BaseException) -> None: ...

    bus.hooks = Hooks()  # type: ignore[assignment]
    marker = f"redo-{uuid.uuid4().hex}"
    # Subscribing from now on: deliver only new messages to this fresh durable.
    from nats.js import api as js_api

    await bus.js.add_consumer(
        "EXEC",
        js_api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=js_api.DeliverPolicy.NEW,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            filter_subject="exec.fill.*",
            max_ack_pending=20_000,
            ack_wait=30.0,
            max_deliver=-1,
        ),
    )
    await bus.subscribe("exec.fill.*", flaky, durable=durable)
    await bus.publish("exec.fill.IBM", _fill(marker))
    await asyncio.wait_for(done.wait(), 15)
    assert attempts == [False, True, True]
    await bus.close()


class _Hooks:
    """Records what the bus refuses, as the runtime's hooks would count and dead-letter it."""

    def __init__(self) -> None:
        self.dropped: list[tuple[str, str]] = []

    def on_received(self, pattern: str, count: int, ts_init: int) -> None:
        pass

    def on_published(self, pattern: str, count: int) -> None:
        pass

    async def on_dropped(
        self, subject: str, reason: str, detail: str, payload: bytes, headers: object
    ) -> None:
        self.dropped.append((subject, reason))

    def on_handler_error(self, subject: str, exc: BaseException) -> None:
        raise exc


async def test_a_typed_subscription_takes_its_types_skips_the_rest_and_refuses_the_wrong_ones(
    tmp_path: Path,
) -> None:
    """Over JetStream: a durable subscription on exec.> that asks for fills gets the fills; the
    order events the stream also carries are acked, never delivered nor redelivered; and an order
    event sent on a fill's subject is refused (dead-lettered) before any handler sees it."""
    # A server of its own: the bad message stays in its EXEC stream, which the session's shared
    # server would hand to any later test's durable consumer of exec.> (the recorder's).
    server = start_nats(tmp_path / "nats")
    nats_url = server.url
    hooks = _Hooks()
    sub_bus = NatsBus(NatsSettings(url=nats_url), "typed", hooks=hooks)
    await sub_bus.connect()
    await sub_bus.ensure_streams()
    pub = await _bus(nats_url)
    symbol = f"T{uuid.uuid4().hex[:5].upper()}"
    got: list[Delivery[Fill]] = []

    async def on_fill(d: Delivery[Fill]) -> None:
        got.append(d)

    durable = f"typed-{symbol}"
    await sub_bus.subscribe(f"exec.*.{symbol}", on_fill, types=Fill, durable=durable, new_only=True)
    await sub_bus.barrier()
    order = stubs.order_event(client_order_id=f"c-{symbol}", symbol=symbol)
    await pub.publish(f"exec.order.{symbol}", order)
    await pub.publish(f"exec.fill.{symbol}", stubs.fill(symbol, exec_id=f"e-{symbol}"))
    await pub.publish_raw(f"exec.fill.{symbol}", codec.encode(order), {"Nats-Msg-Id": f"bad-{symbol}"})
    await await_until(lambda: len(got) == 1 and hooks.dropped, what="the fill and the refusal")
    assert got[0].event.exec_id == f"e-{symbol}"
    assert hooks.dropped == [(f"exec.fill.{symbol}", "wrong_subject")]

    async def settled() -> bool:
        info = await sub_bus.js.consumer_info("EXEC", durable)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await await_until(settled, what="nothing pending or unacked")
    await asyncio.sleep(0.3)
    assert len(got) == 1  # the order event was acked, not left to come back
    await pub.close()
    await sub_bus.close()
    server.stop()

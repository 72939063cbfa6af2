"""Telegram commands through the real alerts, risk and execution services on a real NATS, with a
fake Bot API that speaks python-telegram-bot's HTTP/JSON: a /kill from a chat not allow-listed is
refused and audited (an alert naming the chat, risk untouched); /kill then /kill confirm from an
allowed chat puts risk in EMERGENCY and execution cancels its open order, and the chat hears both."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from libs.common.bus import Delivery
from libs.common.config import NatsSettings, Settings, load_settings
from libs.common.localinfra import start_nats
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime, ServiceApp
from proto.alerts import Alert
from proto.base import Event
from proto.execution import OrderEvent
from services.alerts.runtime import AlertsApp
from services.execution.runtime import ExecutionApp
from services.risk.runtime import RiskApp
from tests.helpers import await_until
from tests.kit import stubs
from tests.kit.fake_telegram import FakeBotApi

TOKEN = "123456:test-token"
DESK_CHAT, OPERATOR = 1001, 7  # the allow-listed chat and the person in it
STRANGER_CHAT = 666
T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York, the market data's time
MS = 1_000_000


@dataclass
class Fleet:
    api: FakeBotApi
    bus: NatsBus  # the test's own connection: market data and approvals out, everything back
    heard: list[Event]
    risk: RiskApp
    execution: ExecutionApp
    alerts: AlertsApp
    market_ns: int = T0

    async def tick(self) -> None:
        self.market_ns += 20 * MS
        quote = stubs.quote(ts=self.market_ns, bid=99.99, ask=100.01, bid_size=500, ask_size=500)
        await self.bus.publish("md.quote.IBM", quote)
        await self.bus.flush()

    async def until(self, predicate: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        """Poll while the market moves: the SimBroker reports only as market data arrives."""
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await self.tick()
            await asyncio.sleep(0.05)
        return value

    def replies(self, chat: int) -> list[str]:
        return [text for sent_to, text in self.api.sent if sent_to == chat]

    def orders(self, cid: str) -> list[str]:
        return [e.status for e in self.heard if isinstance(e, OrderEvent) and e.client_order_id == cid]


async def _run(app: ServiceApp, settings: Settings, stack: list[tuple[Runtime, asyncio.Task[int]]]) -> None:
    rt = Runtime(app.name, settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    stack.append((rt, task))
    await await_until(lambda: rt.ready or task.done(), 60, what=f"{app.name} ready")
    assert not task.done(), task


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    server = start_nats(tmp_path / "nats")
    api = FakeBotApi(TOKEN)  # every chat exists: the stranger gets its refusal
    await api.start()
    settings = load_settings(
        None,
        nats={"url": server.url},
        execution={"journal": str(tmp_path / "journal.msgpack")},
        signing={"approval_key": stubs.TEST_APPROVAL_KEY},
        alerts={"telegram": {"api_url": api.url, "token": TOKEN, "chat_ids": [DESK_CHAT]}},
    )
    bus = NatsBus(NatsSettings(url=server.url), "test-desk")
    running: list[tuple[Runtime, asyncio.Task[int]]] = []
    try:
        await bus.connect()
        await bus.ensure_streams()
        heard: list[Event] = []

        async def hear(d: Delivery[Event]) -> None:
            heard.append(d.event)

        for pattern in ("exec.order.>", "alert.>"):
            await bus.subscribe(pattern, hear)
        await bus.barrier()
        apps = (RiskApp(settings), ExecutionApp(settings), AlertsApp(settings))
        for app in apps:  # consumers of commands before the service that sends them
            await _run(app, settings, running)
        yield Fleet(api, bus, heard, *apps)
    finally:
        for rt, _ in reversed(running):
            rt.request_stop()
        await asyncio.gather(*(asyncio.wait_for(task, 30) for _, task in running), return_exceptions=True)
        await bus.close()
        await api.stop()
        server.stop()


async def test_a_strangers_kill_is_refused_and_the_desks_kills_once_confirmed(
    fleet: Fleet,
) -> None:
    # Execution holds a resting limit order (far below the market: it waits).
    for _ in range(3):
        await fleet.tick()
    approval = stubs.approved(
        "rest-1", quantity=1, ts=time.time_ns(), valid_ms=30_000, order_type="LMT", limit_price=90.0
    )
    await fleet.bus.publish("order.approved.IBM", approval)
    await fleet.until(lambda: "SUBMITTED" in fleet.orders("rest-1"), "the order resting at the venue")
    desk = fleet.alerts.desk
    assert desk is not None
    await await_until(lambda: "rest-1" in desk.commands.open_orders, 10, what="the alerts service saw it")
    fleet.api.push_message(DESK_CHAT, "/orders", from_id=OPERATOR)
    await await_until(lambda: fleet.replies(DESK_CHAT), 10, what="/orders answered")
    assert fleet.replies(DESK_CHAT)[0] == "1 open order(s):\nIBM BUY 1 LMT @ 90.00 SUBMITTED (rest-1)"

    # A chat not allow-listed: refused in its chat, audited on alert.warning, nothing else moves.
    fleet.api.push_message(STRANGER_CHAT, "/kill", from_id=13)
    await await_until(lambda: fleet.replies(STRANGER_CHAT), 10, what="the refusal")
    assert "not allowed" in fleet.replies(STRANGER_CHAT)[0]
    audit = await await_until(
        lambda: [e for e in fleet.heard if isinstance(e, Alert) and e.source == "alerts"], 10, what="audit"
    )
    assert audit[0].severity == "warning" and audit[0].labels["chat_id"] == str(STRANGER_CHAT)
    assert audit[0].title == "refused /kill from chat 666 (user 13): not allow-listed"
    # ...and the audit reaches the desk's chat as an alert (after its burst hold)
    await await_until(lambda: any("refused /kill" in t for t in fleet.replies(DESK_CHAT)), 10, what="told")
    assert fleet.risk.core.mode == "LIVE" and not fleet.execution.core.killed
    assert fleet.orders("rest-1")[-1] == "SUBMITTED"

    # The desk: /kill asks, /kill confirm kills; the chat hears what risk and execution did.
    fleet.api.push_message(DESK_CHAT, "/kill", from_id=OPERATOR)
    await await_until(lambda: any("/kill confirm" in t for t in fleet.replies(DESK_CHAT)), 10, what="ask")
    fleet.api.push_message(DESK_CHAT, "/kill confirm", from_id=OPERATOR)
    answer = await await_until(
        lambda: [t for t in fleet.replies(DESK_CHAT) if t.startswith("kill by")], 15, what="the acks"
    )
    assert answer[0] == (
        f"kill by telegram:{OPERATOR}@{DESK_CHAT}:\n"
        "risk: done: mode LIVE -> EMERGENCY\n"
        "execution: done: killed: new approvals refused; 1 open order(s) cancelled; positions kept"
    )
    assert fleet.risk.core.mode == "EMERGENCY" and fleet.execution.core.killed
    assert fleet.risk.core.mode_reason == f"kill by telegram:{OPERATOR}@{DESK_CHAT}"
    await fleet.until(lambda: "CANCELLED" in fleet.orders("rest-1"), "the resting order cancelled")

    fleet.api.push_message(DESK_CHAT, "/status", from_id=OPERATOR)
    await await_until(
        lambda: any(t.startswith("mode EMERGENCY: kill by") for t in fleet.replies(DESK_CHAT)),
        10,
        what="status",
    )
    status = fleet.alerts.status()
    assert status["commands_refused"] == 1 and status["commands_obeyed"] == 4

"""The risk gate as a process on a real NATS, killed (SIGKILL) during a losing day with no position
snapshot ever kept: restarted, it reads the day's fills back from the EXEC stream. Under the daily
loss limit an entry is still approved (and the fills it had taken are not counted twice); with a
loss past the limit made while it was down, the entry is denied for the daily loss limit. On a
secured bus: the gate reads the stream back as the risk user."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from libs.common import natsauth
from libs.common.bus import Delivery
from libs.common.config import NatsSettings
from libs.common.localinfra import free_port, start_nats
from libs.common.nats_bus import NatsBus
from proto.base import Event
from proto.orders import OrderApproved, OrderDenied
from tests.helpers import http_json, service_env, start_service, wait_until
from tests.kit import stubs

T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York, the market's time
MS = 1_000_000
LIMITS = {"TRADEFLEET_RISK__DAILY_LOSS_LIMIT": "300"}
_exec_ids = itertools.count(1)


def _start_risk(nats_url: str, tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = service_env(
        TRADEFLEET_NATS_URL=nats_url,
        TRADEFLEET_NATS__NKEY_SEED_FILE=str(tmp / "auth" / "risk.nk"),
        TRADEFLEET_HTTP__PORT=str(port),
        **LIMITS,
    )
    proc = start_service("risk", env, tmp / "risk.log")
    wait_until(lambda: http_json(port, "/readyz")[0] == 200, 60, what="risk ready")
    return proc


class Desk:
    """The test's connection: quotes and intents in, the execution gateway's fills played here
    (exec.fill.*, and never an exec.position), the gate's decisions heard back."""

    def __init__(self, url: str, seed: Path) -> None:
        self.bus = NatsBus(NatsSettings(url=url, nkey_seed_file=seed), "test-desk")
        self.decisions: dict[str, OrderApproved | OrderDenied] = {}
        self.market = T0

    async def __aenter__(self) -> Desk:
        await self.bus.connect()
        await self.bus.ensure_streams()

        async def hear(d: Delivery[Event]) -> None:
            if isinstance(d.event, OrderApproved | OrderDenied):
                self.decisions[d.event.intent_id] = d.event

        await self.bus.subscribe("order.>", hear)
        await self.bus.barrier()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()

    async def tick(self) -> None:
        self.market += 20 * MS
        quote = stubs.quote(ts=self.market, bid=99.99, ask=100.01, ts_init=time.time_ns())
        await self.bus.publish("md.quote.IBM", quote)
        await self.bus.flush()

    async def round_trip(self, buy: float, sell: float) -> None:
        """100 shares bought and sold: (sell - buy) x 100 less two commissions of 1."""
        for side, price in (("BUY", buy), ("SELL", sell)):
            self.market += 20 * MS
            fill = stubs.fill(
                side=side,
                quantity=100,
                price=price,
                ts=self.market,
                exec_id=f"ex-{next(_exec_ids)}",
                client_order_id="held-before",
                commission=1.0,
                ts_init=time.time_ns(),
            )
            await self.bus.publish("exec.fill.IBM", fill)

    async def decision(self, intent_id: str, timeout: float = 15.0) -> OrderApproved | OrderDenied:
        """An entry of 10 shares, decided on a fresh quote (a restarted gate has seen none yet)."""
        await self.tick()
        intent = stubs.intent(quantity=10, ts=self.market, intent_id=intent_id, ts_init=time.time_ns())
        await self.bus.publish("order.intent.IBM", intent)
        deadline = time.monotonic() + timeout
        while intent_id not in self.decisions:
            if time.monotonic() > deadline:
                raise AssertionError(f"no decision on {intent_id} within {timeout}s")
            await self.tick()
            await asyncio.sleep(0.05)
        return self.decisions[intent_id]


def _app(port: int) -> dict[str, Any]:
    return dict((http_json(port, "/status")[1] or {}).get("app", {}))


async def test_a_gate_killed_on_a_losing_day_without_snapshots_rebuilds_its_pnl_from_the_fills(
    tmp_path: Path,
) -> None:
    natsauth.write(tmp_path / "auth")
    # A NATS of its own (these fills must not reach other tests), secured as `tradefleet up` does.
    server = start_nats(tmp_path / "nats", config=tmp_path / "auth" / "nats-server.conf")
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None

    def kill() -> None:
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    try:
        async with Desk(server.url, tmp_path / "auth" / "admin.nk") as desk:  # admin makes the streams
            proc = _start_risk(server.url, tmp_path, port)
            await desk.tick()
            await desk.round_trip(100.00, 98.00)  # -202: under the limit of 300
            wait_until(lambda: _app(port).get("day_pnl") == -202.0, 15, what="the gate took the loss")

            kill()
            proc = _start_risk(server.url, tmp_path, port)
            app = _app(port)
            assert app["restored"] and app["day_pnl"] == -202.0  # read back once, not twice
            approved = await desk.decision("under-the-limit")
            assert isinstance(approved, OrderApproved)

            kill()  # and while it is down, a second loss: -102, the day at -304
            await desk.round_trip(100.00, 99.00)
            await desk.bus.flush(roundtrip=True)
            proc = _start_risk(server.url, tmp_path, port)
            assert _app(port)["day_pnl"] == -304.0
            denied = await desk.decision("past-the-limit")
            assert isinstance(denied, OrderDenied), denied
            assert denied.code == "LOSS_DAILY_LIMIT", denied.describe()
            assert denied.context["pnl"] == "-304"
            # The fills it read back and then received from its consumer were applied once.
            await asyncio.sleep(0.5)
            assert _app(port)["day_pnl"] == -304.0
            # What it read the stream back with is gone: its own consumer is the only one left.
            consumers = await desk.bus.js.consumers_info("EXEC")
            assert [c.name for c in consumers] == ["risk-exec"]
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        server.stop()

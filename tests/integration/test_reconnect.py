"""A service rides out a NATS restart: not ready while disconnected, receiving again after."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from libs.common.config import load_settings
from libs.common.localinfra import free_port, start_nats
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime
from tests.helpers import await_until, http_json
from tests.integration.test_runtime import _Relay, _start
from tests.kit import stubs
from tests.kit.samples import T0


async def test_service_reconnects_after_a_nats_restart(tmp_path: Path) -> None:
    port = free_port()
    server = start_nats(tmp_path / "js", port=port)
    url = f"nats://127.0.0.1:{port}"
    symbol = f"R{uuid.uuid4().hex[:5].upper()}"
    settings = load_settings(None, nats={"url": url, "reconnect_wait_s": 0.1})
    rt = Runtime("sink", settings)
    app = _Relay(f"md.quote.{symbol}", None)
    task = await _start(rt, app)
    publisher = NatsBus(settings.nats, "reconnect-publisher")
    await publisher.connect()

    async def send(i: int) -> None:
        quote = stubs.quote(symbol, T0 + i, 10.0, 10.01, i, 1)
        await publisher.publish(f"md.quote.{symbol}", quote)

    try:
        await send(1)
        await await_until(lambda: len(app.received) == 1, what="first quote")

        server.stop()
        await await_until(
            lambda: asyncio.to_thread(lambda: http_json(rt.http_port or 0, "/readyz")[0] == 503),
            what="not ready while NATS is down",
        )
        server = start_nats(tmp_path / "js", port=port)
        await await_until(
            lambda: asyncio.to_thread(lambda: http_json(rt.http_port or 0, "/readyz")[0] == 200),
            what="ready again",
        )
        await await_until(publisher.connected.is_set, what="publisher reconnected")
        await rt.bus.barrier()  # type: ignore[attr-defined]  # its subscription is re-sent on reconnect

        async def delivered_after_restart() -> bool:
            await send(2)
            await asyncio.sleep(0.05)
            return any(d.event.bid_size == 2 for d in app.received)  # type: ignore[attr-defined]

        await await_until(delivered_after_restart, what="quote after the restart")
        assert rt.metrics.reconnects.labels("sink")._value.get() >= 1
    finally:
        rt.request_stop()
        await asyncio.wait_for(task, 20)
        await publisher.close()
        server.stop()

"""The md-gateway on IB, end to end on real NATS: TWS goes away. Inside a configured reset window
the outage is expected and nobody is paged; outside one, once it outlasts max_disconnect_s, a
critical Alert goes out on alert.critical, once; when TWS is back the session is up again."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import nats

from libs.common import codec
from libs.common.config import Settings, load_settings
from libs.common.runtime import Runtime
from proto.alerts import Alert
from services.md_gateway.runtime import MdGatewayApp
from tests.helpers import await_until
from tradefleet.faketws import FakeTws

NEW_YORK = ZoneInfo("America/New_York")


def settings_for(nats_url: str, port: int, windows: list[str]) -> Settings:
    return load_settings(
        None,
        nats={"url": nats_url},
        md_gateway={"provider": "ib"},
        ib={
            "port": port,
            "symbols": ["IBM"],
            "reset_windows": windows,
            "max_disconnect_s": 1.5,
            "backoff_max_s": 0.5,
        },
    )


async def gateway_without_tws(nats_url: str, windows: list[str], watch_s: float) -> list[Alert]:
    """Run the gateway against a fake TWS, take TWS away, collect alerts for ``watch_s``."""
    fake = await FakeTws().start()
    port = fake.port
    settings = settings_for(nats_url, port, windows)
    nc = await nats.connect(nats_url)
    alerts: list[Alert] = []
    paged = asyncio.Event()

    async def collect(msg: Any) -> None:
        event = codec.decode(msg.data)
        if isinstance(event, Alert) and event.source == "md-gateway":
            alerts.append(event)
            if event.severity == "critical":
                paged.set()

    await nc.subscribe("alert.>", cb=collect)
    rt = Runtime("md-gateway", settings)
    app = MdGatewayApp(settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    try:
        # ``ready`` is an Event, always truthy: the session must have connected before TWS goes away
        await await_until(
            lambda: app.ib_session is not None and app.ib_session.ready.is_set(), 15, what="ib ready"
        )
        assert app.ib_session is not None
        await fake.stop()  # TWS is gone: every reconnect is refused
        await await_until(lambda: app.ib_session.connectivity != "up", 10, what="outage seen")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(paged.wait(), watch_s)
        if paged.is_set():
            await asyncio.sleep(2.5)  # longer than the watcher's period: a second alert would show
        fake = await FakeTws().start(port=port)  # TWS is back on the same port
        await await_until(lambda: app.ib_session.connectivity == "up", 15, what="reconnected")
    finally:
        rt.request_stop()
        await asyncio.wait_for(task, 20)
        await fake.stop()
        await nc.drain()
    return alerts


async def test_an_outage_beyond_max_disconnect_pages_once(nats_url: str) -> None:
    alerts = await gateway_without_tws(nats_url, [], watch_s=10)
    critical = [a for a in alerts if a.severity == "critical"]
    assert len(critical) == 1, alerts
    assert "beyond its reset window" in critical[0].title and "DEGRADED" in critical[0].body


async def test_an_outage_inside_a_reset_window_is_expected(nats_url: str) -> None:
    now = dt.datetime.now(NEW_YORK)
    start, end = now - dt.timedelta(minutes=1), now + dt.timedelta(minutes=5)
    window = f"{start:%H:%M}-{end:%H:%M}"  # a daily window around now, New York time
    alerts = await gateway_without_tws(nats_url, [window], watch_s=4)  # > max_disconnect_s
    assert [a for a in alerts if a.severity == "critical"] == []

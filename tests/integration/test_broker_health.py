"""The execution service on IB (the real ibapi client, the fake TWS) tells the risk gate and
people about its link: TWS goes away -> BrokerStatus disconnected at once; TWS back -> reconciled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from libs.common.config import load_settings
from libs.common.localinfra import start_nats
from libs.common.runtime import Runtime
from proto.execution import BrokerStatus
from services.execution.runtime import ExecutionApp
from tests.helpers import await_until, collector
from tradefleet.faketws import FakeTws


async def test_a_lost_tws_is_a_disconnected_status_and_its_return_a_reconciled_one(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "nats")
    fake = await FakeTws().start()
    port = fake.port
    settings = load_settings(
        None,
        nats={"url": server.url},
        execution={"broker": "ib", "journal": str(tmp_path / "journal.msgpack"), "account": "DU123"},
        ib={"port": port, "backoff_max_s": 0.5, "max_disconnect_s": 600},
    )
    nc, seen = await collector(server.url, "exec.broker")
    rt = Runtime("execution", settings)
    task = asyncio.create_task(rt.run(ExecutionApp(settings), install_signals=False))

    def states() -> list[str]:
        return [e.state for e in seen if isinstance(e, BrokerStatus)]

    try:
        await await_until(lambda: states() == ["reconciled"], 30, what="connected and reconciled")
        await fake.stop()
        await await_until(lambda: states()[-1:] == ["disconnected"], 15, what="the link lost")
        fake = await FakeTws().start(port=port)
        await await_until(lambda: states()[-1:] == ["reconciled"], 30, what="back and reconciled")
        assert states() == ["reconciled", "disconnected", "reconciled"]
        statuses: list[Any] = [e for e in seen if isinstance(e, BrokerStatus)]
        assert [s.seq for s in statuses] == [1, 2, 3] and statuses[0].broker.startswith("ib:")
    finally:
        rt.request_stop()
        await asyncio.wait_for(task, 30)
        await nc.close()
        await fake.stop()
        server.stop()

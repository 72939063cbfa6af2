"""Opt-in smoke test against a real TWS / IB Gateway paper account; never runs in CI.

    TRADEFLEET_IB_SMOKE=127.0.0.1:4002 make test-ib-smoke

It connects with the project's session (ready only after nextValidId and managedAccounts),
asks TWS for its clock, and watches IBM's tick-by-tick quotes for a few seconds. It places no
order: an order against a real account, even a paper one, is a person's decision.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from libs.common.config import IbSettings
from libs.common.ib.session import IbSession
from services.md_gateway.providers.ib import IbMarketData

TARGET = os.environ.get("TRADEFLEET_IB_SMOKE", "")
pytestmark = pytest.mark.skipif(
    not TARGET, reason="set TRADEFLEET_IB_SMOKE=host:port of a paper TWS / Gateway"
)


async def test_a_real_paper_gateway_answers_and_streams() -> None:
    host, port = TARGET.rsplit(":", 1)
    assert int(port) in (7497, 4002), "paper ports only (7497 TWS, 4002 Gateway)"
    holder: dict[str, IbMarketData] = {}
    session = IbSession(
        IbSettings(host=host, port=int(port)),
        91,
        lambda name, args: holder["md"].on_event(name, args),  # noqa: PLW0108 - md is made after the session
    )
    md = holder["md"] = IbMarketData(session, ["IBM"], market_data_type=3)
    runner = asyncio.create_task(session.run())
    records: list[tuple[object, ...]] = []

    async def collect() -> None:
        async for rec in md.stream():
            records.append(rec)

    collector = asyncio.create_task(collect())
    try:
        await asyncio.wait_for(session.ready.wait(), 20)
        assert session.accounts and abs(await session.current_time() - time.time()) < 60
        await asyncio.sleep(10)
        assert any(r[0] == "S" for r in records)  # at least its subscription status
    finally:
        await session.stop()
        runner.cancel()
        collector.cancel()

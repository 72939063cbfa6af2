"""The Broker contract (services/execution/broker.py): one set of tests, run against every broker
the execution gateway can hold: the SimBroker directly, and the IB broker on the real ibapi
client through the fake TWS. Whatever the venue, an order is acked then filled whole or rests
until cancelled, a replace is confirmed, the kill switch's cancel-all reaches every working order,
positions follow the fills, and a what-if prices an order without routing it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from libs.common.config import IbSettings, SimSettings
from services.execution.broker import Broker, BrokerOrder, BrokerReport
from services.execution.simbroker import SimBroker
from tests.kit import stubs
from tests.kit.clocks import MS, T0
from tradefleet.faketws import FakeTws

BID, ASK = 100.00, 100.02


@dataclass
class Venue:
    """A broker with the market moving under it: ``step`` is one moment of venue time (the
    simulated venue gets the next quote; the fake TWS plays its own and answers when it does)."""

    broker: Broker
    step: Callable[[], Awaitable[None]]
    reports: list[BrokerReport] = field(default_factory=list)

    async def sink(self, report: BrokerReport) -> None:
        self.reports.append(report)

    def of(self, cid: str, kind: str | None = None) -> list[BrokerReport]:
        return [r for r in self.reports if r.client_order_id == cid and kind in (None, r.kind)]

    def filled(self, cid: str) -> float:
        return sum(r.quantity for r in self.of(cid, "fill"))

    async def until(self, predicate: Callable[[], Any], what: str, steps: int = 400) -> None:
        for _ in range(steps):
            if predicate():
                return
            await self.step()
        raise AssertionError(f"the {self.broker.name} broker never got to: {what}; reports: {self.reports}")

    async def idle(self, steps: int = 20) -> None:
        for _ in range(steps):
            await self.step()


async def sim_venue() -> AsyncIterator[Venue]:
    broker = SimBroker(SimSettings())
    clock = [T0]

    async def step() -> None:
        clock[0] += 5 * MS
        quote = stubs.quote(ts=clock[0], bid=BID, ask=ASK, bid_size=500, ask_size=500)
        for report in broker.on_market(quote):
            await venue.sink(report)
        await asyncio.sleep(0)

    venue = Venue(broker, step)
    await broker.start(venue.sink, namespace="contract")
    await step()
    yield venue
    await broker.stop()


async def ib_venue(tmp: Path) -> AsyncIterator[Venue]:
    fake = await FakeTws(
        [("Q", T0 + i * MS, "IBM", BID, 500, ASK, 500, "N", False) for i in range(200)]
    ).start()
    fake.play(1)
    settings = IbSettings(port=fake.port, backoff_initial_s=0.05, backoff_max_s=0.2)
    from services.execution.ib import IbBroker

    broker = IbBroker(settings, tmp / "ids.jsonl", commission_wait_s=0.3)

    async def step() -> None:
        await asyncio.sleep(0.02)

    venue = Venue(broker, step)
    await broker.start(venue.sink)
    await asyncio.wait_for(broker.reconciled.wait(), 10)
    try:
        yield venue
    finally:
        await broker.stop()
        await fake.stop()


@pytest.fixture(params=["sim", "ib"])
async def venue(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Venue]:
    source = sim_venue() if request.param == "sim" else ib_venue(tmp_path)
    async for v in source:
        yield v


def limit(cid: str, price: float, side: str = "BUY") -> BrokerOrder:
    return BrokerOrder(cid, "IBM", side, 100, "LMT", price)  # type: ignore[arg-type]


async def test_a_market_order_is_acked_then_filled_whole_with_its_costs(venue: Venue) -> None:
    await venue.broker.submit(BrokerOrder("m1", "IBM", "BUY", 100))
    await venue.until(lambda: venue.filled("m1") == 100, "m1 filled")
    await venue.until(lambda: all(r.commission is not None for r in venue.of("m1", "fill")), "commissions")
    kinds = [r.kind for r in venue.of("m1")]
    assert kinds[0] == "ack" and set(kinds) == {"ack", "fill"}
    fills = venue.of("m1", "fill")
    assert len({f.exec_id for f in fills}) == len(fills) and all(f.exec_id for f in fills)
    assert all(BID - 0.05 <= f.price <= ASK + 0.05 for f in fills)
    assert all(f.commission is not None and f.commission > 0 for f in fills)


async def test_positions_follow_the_fills_both_ways(venue: Venue) -> None:
    assert await venue.broker.positions() == {}
    await venue.broker.submit(BrokerOrder("b1", "IBM", "BUY", 100))
    await venue.until(lambda: venue.filled("b1") == 100, "b1 filled")
    assert await venue.broker.positions() == {"IBM": 100}
    await venue.broker.submit(BrokerOrder("s1", "IBM", "SELL", 100))
    await venue.until(lambda: venue.filled("s1") == 100, "s1 filled")
    assert await venue.broker.positions() == {}


async def test_a_limit_away_from_the_market_rests_until_cancelled(venue: Venue) -> None:
    await venue.broker.submit(limit("l1", 95.00))
    await venue.until(lambda: venue.of("l1", "ack"), "l1 acked")
    await venue.idle()
    assert venue.of("l1", "fill") == []
    await venue.broker.cancel("l1")
    await venue.until(lambda: venue.of("l1", "cancelled"), "l1 cancelled")
    await venue.idle()
    assert venue.of("l1", "fill") == [] and len(venue.of("l1", "cancelled")) == 1


async def test_a_replace_is_confirmed_with_the_new_price(venue: Venue) -> None:
    await venue.broker.submit(limit("r1", 95.00))
    await venue.until(lambda: venue.of("r1", "ack"), "r1 acked")
    await venue.broker.replace("r1", limit_price=96.00)
    await venue.until(lambda: venue.of("r1", "replaced"), "r1 replaced")
    assert venue.of("r1", "replaced")[-1].price == 96.00
    await venue.broker.cancel("r1")
    await venue.until(lambda: venue.of("r1", "cancelled"), "r1 cancelled")


async def test_cancel_all_reaches_every_working_order(venue: Venue) -> None:
    for cid, price in (("k1", 95.00), ("k2", 94.00)):
        await venue.broker.submit(limit(cid, price))
    await venue.until(lambda: venue.of("k1", "ack") and venue.of("k2", "ack"), "both acked")
    await venue.broker.cancel_all()
    await venue.until(lambda: venue.of("k1", "cancelled") and venue.of("k2", "cancelled"), "both cancelled")
    assert venue.of("k1", "fill") == venue.of("k2", "fill") == []


async def test_a_what_if_prices_an_order_and_routes_nothing(venue: Venue) -> None:
    preview = await venue.broker.what_if(BrokerOrder("w1", "IBM", "BUY", 200))
    assert preview is not None and not preview.error
    assert preview.commission is not None and preview.commission > 0
    assert preview.init_margin_change is not None and preview.init_margin_change > 0
    await venue.idle()
    assert venue.reports == [] and await venue.broker.positions() == {}

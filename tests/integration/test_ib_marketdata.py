"""The IB session and market-data provider on the real ibapi 9.81.1 client against the fake TWS
(server version 157): the connection and market-data items of ib-api.md's checklist."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from libs.common import codec
from libs.common.clock import SimClock
from libs.common.config import IbSettings
from libs.common.ib.session import IbSession
from services.md_gateway.core import MarketDataCore
from services.md_gateway.providers.ib import IbMarketData, LineBudgetExceeded
from tests.helpers import await_until
from tradefleet.faketws import FakeTws

T = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York


def day(n: int = 40) -> list[tuple[Any, ...]]:
    """A small market: quotes and trades alternating, prices moving a cent at a time."""
    out: list[tuple[Any, ...]] = []
    for i in range(n):
        ts = T + i * 250_000_000
        bid = round(180.00 + (i % 7) * 0.01, 2)
        out.append(("Q", ts, "IBM", bid, 100 + i, round(bid + 0.02, 2), 200 + i, "N", False))
        out.append(("T", ts + 1, "IBM", round(bid + 0.01, 2), 10 + i, "N", 0, False, 0))
    return out


@dataclass
class Rig:
    fake: FakeTws
    session: IbSession
    md: IbMarketData
    records: list[tuple[Any, ...]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [r for r in self.records if r[0] == kind]

    def notes(self, state: str) -> list[tuple[Any, ...]]:
        return [r for r in self.records if r[0] == "S" and r[2] == state]


@contextlib.asynccontextmanager
async def rig(records: list[tuple[Any, ...]] | None = None, **kw: Any) -> AsyncIterator[Rig]:
    fake = await FakeTws(records if records is not None else day()).start()
    cfg = {"backoff_initial_s": 0.05, "backoff_max_s": 0.2, "watchdog_s": 30.0}
    cfg |= {k: kw.pop(k) for k in ("probe_timeout_s", "max_msgs_per_s") if k in kw}
    session_cfg = {
        k: kw.pop(k) for k in list(kw) if k in ("backoff_initial_s", "backoff_max_s", "watchdog_s")
    }
    alerts: list[str] = []
    holder: dict[str, IbMarketData] = {}
    session = IbSession(
        IbSettings(port=fake.port, **{**cfg, **session_cfg}),
        11,
        lambda name, args: holder["md"].on_event(name, args),  # noqa: PLW0108 - md is made after the session
        on_alert=lambda title, body: alerts.append(title),
    )
    md = holder["md"] = IbMarketData(session, ["IBM"], timestamps="exchange", **kw)
    r = Rig(fake, session, md, alerts=alerts)

    async def collect() -> None:
        async for rec in md.stream():
            r.records.append(rec)

    tasks = [asyncio.create_task(session.run()), asyncio.create_task(collect())]
    try:
        yield r
    finally:
        await session.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await fake.stop()


async def subscribed(r: Rig, n: int = 2) -> None:
    await await_until(
        lambda: len(r.fake.clients) and sum(len(c.mkt) for c in r.fake.clients) >= n, 10, what="subs"
    )


async def test_ready_only_after_next_valid_id_and_accounts_then_ticks_decode() -> None:
    async with rig() as r:
        await asyncio.wait_for(r.session.ready.wait(), 10)
        assert r.session.next_valid_id == 1 and r.session.accounts == ["DU1234567"]
        await subscribed(r)
        r.fake.play(4)
        await await_until(lambda: len(r.of("Q")) >= 2 and len(r.of("T")) >= 2, 10, what="ticks")
        q, t = r.of("Q")[0], r.of("T")[0]
        assert q[2:7] == ("IBM", 180.00, 100, 180.02, 200)
        assert t[2:5] == ("IBM", 180.01, 10)
        assert q[1] == T and t[1] == T + 1  # IB's second, strictly increasing within it
        # Every record is one the md-gateway core turns into an event that survives the wire.
        core = MarketDataCore(SimClock(T), 10.0, True, None)
        events = [core.on_record(rec) for rec in sorted(r.of("Q") + r.of("T"), key=lambda x: x[1])]
        assert all(e is not None and codec.decode(codec.encode(e)) == e for e in events)
        assert r.notes("connected")


async def test_a_server_that_never_answers_the_handshake_times_out_and_is_retried() -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accepts the connection, says nothing

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    session = IbSession(
        IbSettings(port=port, connect_timeout_s=0.5, backoff_initial_s=0.05, backoff_max_s=0.1),
        1,
        lambda n, a: None,
    )
    task = asyncio.create_task(session.run())
    try:
        await await_until(lambda: session.stats.get("connect_failures", 0) >= 2, 15, what="retries")
        assert not session.ready.is_set()
    finally:
        await session.stop()
        task.cancel()
        server.close()


async def test_a_dropped_socket_reconnects_and_resubscribes_with_new_req_ids() -> None:
    async with rig() as r:
        await subscribed(r)
        before = set(r.md.active)
        await r.fake.drop()
        await await_until(lambda: r.session.connections == 2, 10, what="reconnect")
        await subscribed(r)
        assert r.md.active and not (set(r.md.active) & before)  # new reqIds
        r.fake.play(2)
        await await_until(lambda: r.of("Q"), 10, what="ticks after the reconnect")
        assert r.notes("disconnected") and r.notes("recovered")


async def test_client_id_in_use_is_refused_alerted_and_retried_until_free() -> None:
    async with rig() as first:
        await subscribed(first)
        alerts: list[str] = []
        second = IbSession(
            IbSettings(port=first.fake.port, backoff_initial_s=0.05, backoff_max_s=0.2),
            11,
            lambda n, a: None,
            on_alert=lambda title, body: alerts.append(title),
        )
        task = asyncio.create_task(second.run())
        try:
            await await_until(lambda: first.fake.counters["error_326"] >= 1, 10, what="326")
            # the fake counts the 326 as it sends it; the client reads it a moment later
            await await_until(lambda: any("already in use" in a for a in alerts), 10, what="alert")
            assert not second.ready.is_set()
            await first.session.stop()  # the first lets go of the id
            await asyncio.wait_for(second.ready.wait(), 10)
        finally:
            await second.stop()
            task.cancel()


async def test_a_silent_socket_is_probed_then_dropped_and_reconnected() -> None:
    async with rig(watchdog_s=0.3, probe_timeout_s=0.3) as r:
        await subscribed(r)
        r.fake.faults.silent = True
        await await_until(lambda: r.session.stats.get("watchdog_drops", 0) >= 1, 10, what="watchdog")
        r.fake.faults.silent = False
        await await_until(lambda: r.session.connections >= 2 and r.session.ready.is_set(), 10, what="back")


async def test_1100_marks_stale_1101_resubscribes_1102_keeps() -> None:
    async with rig() as r:
        await subscribed(r)
        r.fake.error_all(1100, "Connectivity between IB and Trader Workstation has been lost.")
        await await_until(lambda: r.session.connectivity == "lost" and r.notes("stale"), 10, what="1100")
        requests = r.md.stats["subscribe_requests"]
        r.fake.error_all(1102, "Connectivity restored - data maintained.")
        await await_until(lambda: r.session.connectivity == "up", 10, what="1102")
        await asyncio.sleep(0.2)
        assert r.md.stats["subscribe_requests"] == requests  # 1102: nothing to redo
        before = set(r.md.active)
        r.fake.error_all(1101, "Connectivity restored - data lost.")  # the fake drops the subs
        await await_until(lambda: r.md.stats["subscribe_requests"] == requests + 2, 10, what="resubscribed")
        assert not (set(r.md.active) & before)
        await subscribed(r)
        r.fake.play(2)
        await await_until(lambda: r.of("Q"), 10, what="data after 1101")


async def test_one_pacer_keeps_a_burst_under_the_rate_and_100_is_surfaced() -> None:
    async with rig(max_msgs_per_s=20.0) as r:
        r.fake.faults.max_msgs_per_s = 25
        await asyncio.wait_for(r.session.ready.wait(), 10)
        await asyncio.gather(*(r.session.send(lambda c: c.reqCurrentTime()) for _ in range(40)))
        await await_until(lambda: r.fake.counters["in_49"] >= 40, 10, what="all sent")
        assert r.fake.counters["error_100"] == 0
        # Around the pacer (what a bug would do): TWS answers 100 and the session alerts.
        client = r.session._client
        assert client is not None
        for _ in range(40):
            client.reqCurrentTime()
        await await_until(lambda: any("rate" in a for a in r.alerts), 10, what="100 alert")


async def test_permission_notes_keep_the_subscription_and_a_refusal_ends_only_its_own() -> None:
    async with rig() as r:
        await subscribed(r)
        bid_ask = next(k for k, s in r.md.active.items() if s.kind == "BidAsk")
        all_last = next(k for k, s in r.md.active.items() if s.kind == "AllLast")
        r.fake.error_for(
            bid_ask, 10167, "Requested market data is not subscribed. Displaying delayed market data."
        )
        r.fake.error_for(all_last, 200, "No security definition has been found for the request")
        await await_until(lambda: r.md.stats["subscriptions_failed"] == 1, 10, what="refusal")
        assert bid_ask in r.md.active and all_last not in r.md.active
        r.fake.play(4)
        await await_until(lambda: len(r.of("Q")) >= 2, 10, what="quotes still flow")


async def test_depth_keeps_the_book_and_a_317_reset_deletes_every_level() -> None:
    async with rig(depth_symbols=["IBM"]) as r:
        await subscribed(r, 3)
        r.fake.play(2)
        await await_until(lambda: len(r.of("D")) >= 2, 10, what="depth")
        depth = next(k for k, s in r.md.active.items() if s.kind == "Depth")
        r.fake.error_for(depth, 317, "Market depth data has been RESET. Please empty deep book contents.")
        await await_until(lambda: [d for d in r.of("D") if d[5] == "DELETE"], 10, what="reset")
        deletes = [(d[3], d[4]) for d in r.of("D") if d[5] == "DELETE"]
        assert sorted(deletes) == [("ASK", 0), ("BID", 0)] and r.md.stats["depth_resets"] == 1


async def test_delayed_market_data_is_asked_for_before_subscribing() -> None:
    async with rig(market_data_type=3) as r:
        await subscribed(r)
        assert r.fake.counters["market_data_type_3"] == 1


async def test_the_line_budget_is_a_clear_error() -> None:
    session = IbSession(IbSettings(), 1, lambda n, a: None)
    with pytest.raises(LineBudgetExceeded, match="line budget of 3"):
        IbMarketData(session, ["IBM", "BAC"], max_lines=3)


async def test_news_ticks_and_bulletins_arrive_as_news_records() -> None:
    async with rig(news=True) as r:
        await subscribed(r, 3)
        await await_until(lambda: any(c.bulletins for c in r.fake.clients), 10, what="bulletins asked for")
        news_req = next(k for k, s in r.md.active.items() if s.kind == "News")
        assert r.fake.clients[0].mkt[news_req] == ("News", "IBM")  # a news-only line (mdoff,292)
        r.fake.news(
            "IBM",
            "IBM beats third-quarter estimates",
            provider="BRFG",
            article_id="BRFG$0001",
            ts_ms=1_381_240_800_123,
        )
        r.fake.bulletin("Trading halted in XYZ pending news")
        await await_until(lambda: len(r.of("N")) == 2, 10, what="news")
        headline, bulletin = r.of("N")
        assert headline[1] == 1_381_240_800_123_000_000  # IB's story time (ms), not the arrival
        assert headline[2:] == ("IBM", "ib:BRFG", "ib:BRFG:BRFG$0001", "IBM beats third-quarter estimates")
        assert bulletin[2:4] == ("", "ib:bulletin") and bulletin[5] == "Trading halted in XYZ pending news"

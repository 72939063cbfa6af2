"""The execution core with the IB broker, on the real ibapi 9.81.1 client against the fake TWS:
the execution items of ib-api.md's checklist, and a fault storm after which positions reconcile
exactly with the fake's book, with no duplicate order and no lost fill."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from libs.common.clock import SimClock
from libs.common.config import IbSettings
from libs.common.ib.session import IbSession
from proto.control import Control
from proto.execution import Fill, OrderEvent
from proto.orders import OrderApproved
from services.execution.broker import BrokerOrder, BrokerReport
from services.execution.core import Cancel, ExecutionCore, JournalRecord, Outcome, Replace, Send
from services.execution.ib import IbBroker, OrderIds
from tests.helpers import await_until
from tests.kit import cores, stubs
from tradefleet.faketws import FakeTws

T = 1_381_240_800_000_000_000


def quotes(n: int = 400, bid: float = 100.00) -> list[tuple[Any, ...]]:
    return [
        ("Q", T + i * 1_000_000, "IBM", bid, 500, round(bid + 0.02, 2), 500, "N", False) for i in range(n)
    ]


@dataclass
class Desk:
    fake: FakeTws
    session: IbSession
    broker: IbBroker
    core: ExecutionCore
    events: list[Any] = field(default_factory=list)
    journal: list[JournalRecord] = field(default_factory=list)

    async def act(self, out: Outcome) -> None:
        for a in out.actions:
            if isinstance(a, JournalRecord):
                self.journal.append(a)
            elif isinstance(a, Send):
                await self.broker.submit(a.order)
            elif isinstance(a, Cancel):
                await self.broker.cancel(a.client_order_id)
            elif isinstance(a, Replace):
                await self.broker.replace(a.client_order_id, a.quantity, a.limit_price)
        self.events += out.events

    async def approve(self, cid: str, side: str = "BUY", qty: float = 100, **kw: Any) -> None:
        a = OrderApproved(
            ts_event=T,
            ts_init=T,
            intent_id=f"i-{cid}",
            client_order_id=cid,
            symbol="IBM",
            side=side,  # type: ignore[arg-type]
            quantity=qty,
            **{"valid_until_ns": T + 60 * 10**9, **kw},
        )
        await self.act(self.core.on_approved(stubs.sign(a)))

    def statuses(self, cid: str) -> list[str]:
        return [e.status for e in self.events if isinstance(e, OrderEvent) and e.client_order_id == cid]

    def fills(self, cid: str | None = None) -> list[Fill]:
        return [e for e in self.events if isinstance(e, Fill) and cid in (None, e.client_order_id)]

    def position(self) -> float:
        pos = self.core.positions.get("IBM")
        return pos.quantity if pos else 0.0


@contextlib.asynccontextmanager
async def desk(tmp: Path, fake: FakeTws | None = None, **broker_kw: Any) -> AsyncIterator[Desk]:
    """The execution core and the IB broker against the fake TWS, wired as the gateway wires
    them: every report the broker makes goes through the core."""
    fake = fake or await FakeTws(quotes()).start()
    fake.play(1)
    core = cores.execution(SimClock(T))
    settings = IbSettings(port=fake.port, backoff_initial_s=0.05, backoff_max_s=0.2)
    broker = IbBroker(
        settings,
        tmp / "ids.jsonl",
        our_positions=lambda: {s: p.quantity for s, p in core.positions.items()},
        **broker_kw,
    )
    d = Desk(fake, broker.ib, broker, core)

    async def on_report(report: BrokerReport) -> None:
        await d.act(core.on_report(report))

    await broker.start(on_report)
    await asyncio.wait_for(broker.reconciled.wait(), 10)
    try:
        yield d
    finally:
        await broker.stop()


async def test_a_market_order_fills_in_parts_with_commissions_joined_by_exec_id(tmp_path: Path) -> None:
    fake = await FakeTws(quotes()).start()
    fake.faults.partial_fills = 3
    async with desk(tmp_path, fake) as d:
        await d.approve("c1", qty=300)
        await await_until(lambda: "FILLED" in d.statuses("c1"), 10, what="filled")
        fills = d.fills("c1")
        assert [f.quantity for f in fills] == [100, 100, 100] and {f.price for f in fills} == {100.02}
        assert all(f.commission == 1.0 for f in fills)  # joined by exec id
        assert len({f.exec_id for f in fills}) == 3
        sent = [o for o in fake.orders.values()]
        assert [o.order_ref for o in sent] == ["c1"]  # orderRef = client order id
        assert fake.counters["error_10268"] == 0  # eTradeOnly / firmQuoteOnly sent as False
        assert OrderIds(tmp_path / "ids.jsonl").by_client == {"c1": sent[0].order_id}  # persisted
        assert d.position() == 300 == fake.positions["IBM"][0]
    await fake.stop()


async def test_limit_rests_then_cancels_with_202_and_a_reject_carries_its_201_reason(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        await d.approve("l1", order_type="LMT", limit_price=99.00)
        await await_until(lambda: "SUBMITTED" in d.statuses("l1"), 10, what="acked")
        c = Control(
            ts_event=T,
            ts_init=T,
            command_id="x",
            command="cancel",
            issued_by="t",
            args={"client_order_id": "l1"},
        )
        await d.act(d.core.on_control(c))
        await await_until(lambda: "CANCELLED" in d.statuses("l1"), 10, what="cancelled")
        d.fake.faults.reject_next = "Insufficient margin"
        await d.approve("r1")
        await await_until(lambda: "REJECTED" in d.statuses("r1"), 10, what="rejected")
        assert "201" in d.core.orders["r1"].reason and "margin" in d.core.orders["r1"].reason
        await d.broker.cancel("l1")  # again: IB says 10148 (not cancellable), counted
        await await_until(lambda: d.broker.stats["cancel_error_10148"] == 1, 10, what="10148")


async def test_a_short_held_for_a_locate_stays_live_then_fills_or_is_rejected(tmp_path: Path) -> None:
    fake = await FakeTws(quotes()).start()
    fake.faults.locate = {"IBM"}
    async with desk(tmp_path, fake) as d:
        await d.approve("s1", side="SELL")
        await await_until(lambda: d.broker.stats["held_for_locate"] >= 1, 10, what="held")
        assert fake.orders[next(iter(fake.orders))].status == "Inactive"
        assert d.core.orders["s1"].status not in ("REJECTED", "CANCELLED") and d.fills("s1") == []
        fake.release_locates(found=True)
        await await_until(lambda: "FILLED" in d.statuses("s1"), 10, what="filled after the locate")
        assert d.position() == -100 == fake.positions["IBM"][0]

        await d.approve("s2", side="SELL")  # shorter still: another locate, none found this time
        await await_until(lambda: d.broker.stats["held_for_locate"] >= 2, 10, what="held again")
        fake.release_locates(found=False)
        await await_until(lambda: "REJECTED" in d.statuses("s2"), 10, what="rejected")
        assert "201" in d.core.orders["s2"].reason and "short" in d.core.orders["s2"].reason
        assert d.position() == -100 and d.fills("s2") == []
    await fake.stop()


async def test_late_commissions_are_joined_or_the_fill_goes_out_unknown(tmp_path: Path) -> None:
    fake = await FakeTws(quotes()).start()
    fake.faults.late_commissions = True
    async with desk(tmp_path, fake, commission_wait_s=5.0) as d:
        await d.approve("c1")
        await await_until(lambda: d.broker.pending, 10, what="fill waiting for its commission")
        assert not d.fills("c1")
        fake.release_commissions()
        await await_until(lambda: d.fills("c1"), 10, what="fill")
        assert d.fills("c1")[0].commission == 1.0
    fake2 = await FakeTws(quotes()).start()
    fake2.faults.late_commissions = True
    async with desk(tmp_path / "b", fake2, commission_wait_s=0.3) as d:
        await d.approve("c2")
        await await_until(lambda: d.fills("c2"), 10, what="fill without commission")
        assert d.fills("c2")[0].commission is None and d.broker.stats["fills_without_commission"] == 1
        fake2.release_commissions()
        await await_until(lambda: d.broker.stats["late_commissions"] == 1, 10, what="late one counted")
    await fake.stop()
    await fake2.stop()


async def test_a_bracket_is_native_the_stop_is_cancelled_when_the_take_profit_fills(tmp_path: Path) -> None:
    fake = await FakeTws(quotes(5) + quotes(5, bid=100.60)).start()
    async with desk(tmp_path, fake) as d:
        await d.approve("b1", order_type="BRACKET", take_profit_price=100.50, stop_loss_price=99.50)
        await await_until(lambda: "FILLED" in d.statuses("b1"), 10, what="entry filled")
        ids = d.broker.ids.by_client
        legs = {o.order_ref: o for o in fake.orders.values()}
        assert legs["b1.tp"].parent_id == ids["b1"] == legs["b1.sl"].parent_id
        assert legs["b1.tp"].oca_group == legs["b1.sl"].oca_group == "b1"
        fake.play(6)  # the market moves through the take-profit
        await await_until(lambda: "FILLED" in d.statuses("b1.tp"), 10, what="take profit")
        await await_until(lambda: "CANCELLED" in d.statuses("b1.sl"), 10, what="stop cancelled")
        assert d.position() == 0 == fake.positions["IBM"][0]
    await fake.stop()


async def test_the_kill_switch_sends_a_global_cancel(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        for k in range(3):
            await d.approve(f"l{k}", order_type="LMT", limit_price=99.00)
        await await_until(lambda: all("SUBMITTED" in d.statuses(f"l{k}") for k in range(3)), 10, what="acked")
        assert d.broker.global_cancel()
        await await_until(
            lambda: all("CANCELLED" in d.statuses(f"l{k}") for k in range(3)), 10, what="all cancelled"
        )
        assert d.fake.counters["in_58"] == 1


async def test_a_reused_order_id_is_rejected_and_never_resent(tmp_path: Path) -> None:
    fake = await FakeTws(quotes()).start()
    async with desk(tmp_path / "a", fake) as d:
        await d.approve("c1")
        await await_until(lambda: "FILLED" in d.statuses("c1"), 10, what="filled")
    # A second gateway that lost its id file (the worst case) and a TWS whose nextValidId rolled back.
    fake.faults.next_valid_id = 1
    async with desk(tmp_path / "b", fake) as d:
        await d.approve("c2")
        await await_until(lambda: "REJECTED" in d.statuses("c2"), 10, what="103")
        assert "103" in d.core.orders["c2"].reason and d.broker.stats["sent"] == 1  # not resent
    await fake.stop()


async def test_after_a_fault_storm_positions_reconcile_with_no_duplicate_and_no_lost_fill(
    tmp_path: Path,
) -> None:
    fake = await FakeTws(quotes(2000)).start()
    fake.faults.partial_fills = 2
    async with desk(tmp_path, fake, commission_wait_s=0.3) as d:
        await d.approve("s1", qty=200)
        await await_until(lambda: "FILLED" in d.statuses("s1"), 10, what="first fill")

        # 1. Fills happen while the socket is down: recovered by reqExecutions on reconnect.
        fake.faults.hold_fills = True
        await d.approve("s2", side="SELL", qty=100)
        await await_until(lambda: "SUBMITTED" in d.statuses("s2"), 10, what="s2 acked")
        await fake.drop()
        fake.release_fills()  # s2 fills at IB while nobody listens
        await await_until(lambda: d.broker.stats["reconciliations"] >= 2, 15, what="reconciled")
        await await_until(lambda: "FILLED" in d.statuses("s2"), 10, what="s2 recovered")
        assert d.broker.last_reconciliation is not None and d.broker.last_reconciliation.recovered_fills == 2

        # 2. 1101, late commissions, and a nextValidId rollback on the next connection.
        fake.error_all(1101, "Connectivity restored - data lost.")
        fake.faults.late_commissions = True
        fake.faults.next_valid_id = 1
        await fake.drop()

        def back() -> bool:
            r = d.broker.last_reconciliation
            return (
                d.session.connections >= 3
                and d.broker.reconciled.is_set()
                and r is not None
                and r.positions is not None
            )

        await await_until(back, 15, what="reconnected and reconciled again")
        await d.approve("s3", qty=300)
        await await_until(lambda: "FILLED" in d.statuses("s3"), 10, what="s3")
        fake.release_commissions()

        # 3. A ghost session holds the client id for a while (326), then lets go.
        ghost = IbSession(IbSettings(port=fake.port), 12, lambda n, a: None)
        await fake.drop()
        ghost_task = asyncio.create_task(ghost.run())
        await await_until(lambda: 12 in fake.connected_client_ids(), 10, what="ghost holds the id")
        await asyncio.sleep(0.3)
        await ghost.stop()
        ghost_task.cancel()
        await await_until(lambda: d.broker.stats["reconciliations"] >= 4, 20, what="back after 326")
        await d.approve("s4", side="SELL", qty=100)
        await await_until(lambda: "FILLED" in d.statuses("s4"), 10, what="s4")

        # The books agree exactly; every IB execution became exactly one fill; no order twice.
        r = d.broker.last_reconciliation = await d.broker.reconcile()
        assert r.positions == {"IBM": d.position()} == {"IBM": fake.positions["IBM"][0]} == {"IBM": 300.0}
        summary = d.broker.summary()  # what the run summary shows
        assert summary["positions_match"] is True and summary["duplicate_executions"] == 0
        exec_ids = [f.exec_id for f in d.fills()]
        assert sorted(exec_ids) == sorted(e.exec_id for e in fake.executions)
        refs = [o.order_ref for o in fake.orders.values()]
        assert sorted(refs) == ["s1", "s2", "s3", "s4"]
        assert fake.counters["error_103"] == 0 and fake.counters["error_326"] >= 1
    await fake.stop()


async def test_a_default_9_81_order_meets_10268_and_is_rejected(tmp_path: Path) -> None:
    from ibapi.contract import Contract
    from ibapi.order import Order as IbOrder

    async with desk(tmp_path) as d:
        order_id = d.broker.ids.allocate("raw", d.session.next_valid_id)
        contract, order = Contract(), IbOrder()  # 9.81's defaults: eTradeOnly, firmQuoteOnly True
        contract.symbol, contract.secType, contract.exchange, contract.currency = "IBM", "STK", "SMART", "USD"
        order.action, order.totalQuantity, order.orderType = "BUY", 1, "MKT"
        await d.session.send(lambda c: c.placeOrder(order_id, contract, order))
        await await_until(lambda: d.broker.stats["report_rejected"] == 1, 10, what="10268 rejected")
        assert d.fake.counters["error_10268"] == 1 and not d.fake.orders


async def test_a_query_that_never_answers_is_unknown_not_empty(tmp_path: Path) -> None:
    fake = await FakeTws(quotes()).start()
    async with desk(tmp_path, fake, query_timeout_s=0.5) as d:
        await d.approve("l1", order_type="LMT", limit_price=99.00)
        await await_until(lambda: "SUBMITTED" in d.statuses("l1"), 10, what="acked")
        fake.faults.unanswered = {61, 5}  # reqPositions and reqOpenOrders hang
        r = await d.broker.reconcile()
        assert r.positions is None and r.open_orders is None  # unknown
        assert d.broker.stats["query_failed_positions"] == 1
        d.broker.last_reconciliation = r
        assert d.broker.summary()["positions_match"] is None
        await asyncio.sleep(0.2)
        assert d.statuses("l1")[-1] == "SUBMITTED"  # nothing was settled from an unknown
    await fake.stop()


async def test_a_what_if_previews_margin_and_commission_and_routes_nothing(tmp_path: Path) -> None:

    async with desk(tmp_path) as d:
        preview = await d.broker.what_if(BrokerOrder("probe", "IBM", "BUY", 200))
        assert preview is not None and preview.error == ""
        # 200 x 100.02 at 25% initial margin, the first (untrustworthy) answer skipped
        assert preview.init_margin_change == pytest.approx(200 * 100.02 * 0.25)
        assert preview.commission == 1.0 and preview.equity_with_loan_after == 100_000.0
        assert not d.fake.orders and not d.fake.executions  # nothing routed
        assert d.fake.counters["what_if"] == 1
        d.fake.faults.unanswered = {3}  # TWS says nothing: unknown, not zero
        assert await d.broker.what_if(BrokerOrder("probe2", "IBM", "BUY", 1), timeout_s=0.3) is None


async def test_the_account_is_read_at_each_reconciliation_and_again_after_1101(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        await d.approve("c1", qty=100)
        await await_until(lambda: "FILLED" in d.statuses("c1"), 10, what="filled")
        first = d.broker.stats["reconciliations"]
        d.fake.error_all(1101, "Connectivity restored - data lost.")
        await await_until(lambda: d.broker.stats["reconciliations"] > first, 10, what="re-reconciled")
        account = d.broker.summary()["account"]
        assert account["NetLiquidation"] == 100_000.0
        assert account["GrossPositionValue"] == pytest.approx(100 * 100.02)


async def test_what_if_is_a_request_reply_over_nats(tmp_path: Path) -> None:
    from libs.common.config import NatsSettings
    from libs.common.localinfra import start_nats
    from libs.common.nats_bus import NatsBus
    from proto.orders import MarginCheck, MarginReply

    server = start_nats(tmp_path / "nats")
    serving, asking = (
        NatsBus(NatsSettings(url=server.url), "exec"),
        NatsBus(NatsSettings(url=server.url), "risk"),
    )
    try:
        async with desk(tmp_path) as d:
            await serving.connect()
            await asking.connect()

            async def answer(request: Any) -> MarginReply:
                p = await d.broker.what_if(BrokerOrder("q", request.symbol, request.side, request.quantity))
                assert p is not None
                return MarginReply(
                    ts_event=T,
                    ts_init=T,
                    request_id=request.request_id,
                    known=True,
                    init_margin_after=p.init_margin_after,
                    equity_with_loan_after=p.equity_with_loan_after,
                )

            await serving.serve("broker.whatif", answer)
            check = MarginCheck(
                ts_event=T, ts_init=T, request_id="i-9", symbol="IBM", side="BUY", quantity=100
            )
            reply = await asking.request("broker.whatif", check, 5.0)
            assert isinstance(reply, MarginReply) and reply.known and reply.request_id == "i-9"
            assert reply.init_margin_after == pytest.approx(100 * 100.02 * 0.25)
    finally:
        await serving.close()
        await asking.close()
        server.stop()


async def test_an_order_or_cancel_meeting_a_closed_socket_is_rejected_or_deferred(tmp_path: Path) -> None:
    async with desk(tmp_path) as d:
        await d.approve("l1", order_type="LMT", limit_price=99.00)
        await await_until(lambda: "SUBMITTED" in d.statuses("l1"), 10, what="acked")
        client = d.session._client
        assert client is not None
        client.conn.disconnect()  # the socket dies under the session, before it notices
        await d.broker.cancel("l1")
        assert d.broker.pending_cancels == {"l1"}  # kept, sent again after the reconnect
        await await_until(lambda: "CANCELLED" in d.statuses("l1"), 15, what="cancel sent after reconnect")

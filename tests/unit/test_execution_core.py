"""The execution core with the SimBroker in the loop: journal before send, fail closed on stale
approvals, duplicates, positions and P&L, the kill switch, and a restart that never re-sends."""

from __future__ import annotations

import pytest

from libs.common.clock import SimClock
from proto.control import Control
from proto.execution import Fill, OrderEvent, PositionSnapshot
from proto.market import Quote
from proto.orders import OrderApproved
from services.execution.core import Cancel, ExecConfig, ExecutionCore, JournalRecord, Outcome, Send
from services.execution.simbroker import SimBroker, SimConfig

T = 1_381_240_800_000_000_000
MS = 1_000_000


class Harness:
    """The runtime's job, in memory: journal, then act; market data to the broker and the core."""

    def __init__(self, **cfg: object) -> None:
        self.clock = SimClock(T)
        self.core = ExecutionCore(ExecConfig(**cfg), self.clock)  # type: ignore[arg-type]
        self.broker = SimBroker(SimConfig(commission="ib-fixed"))
        self.journal: list[JournalRecord] = []
        self.sent: list[str] = []
        self.events: list[object] = []
        self.quote(T, 99.99, 100.01)

    def run(self, out: Outcome) -> None:
        for action in out.actions:
            if isinstance(action, JournalRecord):
                self.journal.append(action)
            elif isinstance(action, Send):
                assert (
                    self.journal and self.journal[-1].client_order_id == action.order.client_order_id
                )  # journal first
                self.sent.append(action.order.client_order_id)
                self.broker.submit(action.order, self.clock.now_ns())
            elif isinstance(action, Cancel):
                self.broker.cancel(action.client_order_id, self.clock.now_ns())
        self.events += out.events

    def quote(self, ts: int, bid: float, ask: float) -> None:
        self.clock.set(ts)
        q = Quote(ts_event=ts, ts_init=ts, symbol="IBM", bid=bid, ask=ask, bid_size=1000, ask_size=1000)
        self.core.on_quote(q)
        for report in self.broker.on_quote("IBM", ts, bid, ask, 1000, 1000):
            self.run(self.core.on_report(report))

    def approve(
        self, cid: str, side: str = "BUY", qty: float = 100, valid_ms: float = 2000, **kw: object
    ) -> None:
        now = self.clock.now_ns()
        a = OrderApproved(
            ts_event=now,
            ts_init=now,
            intent_id=f"i-{cid}",
            client_order_id=cid,
            symbol="IBM",
            side=side,
            quantity=qty,
            valid_until_ns=now + int(valid_ms * MS),
            **kw,
        )  # type: ignore[arg-type]
        self.run(self.core.on_approved(a))

    def statuses(self, cid: str) -> list[str]:
        return [e.status for e in self.events if isinstance(e, OrderEvent) and e.client_order_id == cid]


def test_an_approval_is_journaled_sent_acked_and_filled_into_a_position() -> None:
    h = Harness()
    h.approve("c1")
    assert h.sent == ["c1"] and h.journal[0].kind == "send" and h.journal[0].quantity == 100
    h.quote(T + 20 * MS, 100.00, 100.02)
    assert h.statuses("c1") == ["PENDING_SUBMIT", "SUBMITTED", "FILLED"]
    fill = next(e for e in h.events if isinstance(e, Fill))
    assert fill.price == 100.01 and fill.commission == pytest.approx(1.0)  # the ask when it arrived
    snap = [e for e in h.events if isinstance(e, PositionSnapshot)][-1]
    assert snap.positions[0].quantity == 100 and snap.realized_pnl == pytest.approx(-1.0)


def test_stale_approvals_and_duplicates_never_become_orders() -> None:
    h = Harness()
    h.clock.set(T + 10 * MS)
    stale = OrderApproved(
        ts_event=T,
        ts_init=T,
        intent_id="i",
        client_order_id="old",
        symbol="IBM",
        side="BUY",
        quantity=100,
        valid_until_ns=T + 5 * MS,
    )
    h.run(h.core.on_approved(stale))
    assert h.sent == [] and h.statuses("old") == ["REJECTED"]
    assert "expired" in next(e for e in h.events if isinstance(e, OrderEvent)).reason
    h.approve("br", order_type="BRACKET")
    assert h.statuses("br") == ["REJECTED"] and "not supported" in h.core.orders["br"].reason
    h.approve("c1")
    h.approve("c1")  # redelivered
    assert h.sent == ["c1"] and h.core.stats["duplicate_approvals"] == 1


def test_round_trip_pnl_with_commissions() -> None:
    h = Harness()
    h.approve("b1", "BUY", 100)
    h.quote(T + 20 * MS, 100.49, 100.51)
    h.approve("s1", "SELL", 100)
    h.quote(T + 40 * MS, 100.49, 100.51)
    snap = [e for e in h.events if isinstance(e, PositionSnapshot)][-1]
    # bought at 100.01 (the ask when it arrived), sold at 100.49: +48.00 less two $1 commissions
    # and the sale's transaction fees
    assert snap.positions[0].quantity == 0
    assert snap.realized_pnl == pytest.approx(48.0 - 2.0 - (0.0000278 * 10049 + 0.000166 * 100), abs=1e-6)


def test_kill_cancels_everything_refuses_approvals_and_can_flatten() -> None:
    h = Harness()
    h.approve("b1", "BUY", 100)
    h.quote(T + 20 * MS, 100.00, 100.02)
    h.approve("l1", "BUY", 100, order_type="LMT", limit_price=99.50)  # rests
    h.quote(T + 40 * MS, 100.00, 100.02)
    kill = Control(
        ts_event=T, ts_init=T, command_id="k1", command="kill", issued_by="ops", args={"flatten": "true"}
    )
    h.run(h.core.on_control(kill))
    assert [r.kind for r in h.journal] == ["send", "send", "cancel", "send"]  # the cancel and the flatten
    h.quote(T + 60 * MS, 100.00, 100.02)
    assert h.statuses("l1")[-1] == "CANCELLED"
    flat = [cid for cid in h.sent if cid.startswith("flat-")]
    assert len(flat) == 1 and h.statuses(flat[0])[-1] == "FILLED"
    assert h.core.positions["IBM"].quantity == 0
    h.approve("after")
    assert h.statuses("after") == ["REJECTED"] and "kill" in h.core.orders["after"].reason


def test_a_restart_restores_the_journal_and_never_resends() -> None:
    h = Harness()
    h.approve("c1")
    journal = list(h.journal)
    # The process dies before any report: a new core from the journal.
    fresh = ExecutionCore(ExecConfig(), SimClock(T + 100 * MS))
    events = fresh.restore(journal)
    assert [e.status for e in events if isinstance(e, OrderEvent)] == ["UNRESOLVED"]
    a = OrderApproved(
        ts_event=T,
        ts_init=T,
        intent_id="i-c1",
        client_order_id="c1",
        symbol="IBM",
        side="BUY",
        quantity=100,
        valid_until_ns=T + 10_000 * MS,
    )
    assert fresh.on_approved(a).actions == []  # the redelivered approval is not a second order

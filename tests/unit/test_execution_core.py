"""The execution core with the SimBroker in the loop: journal before send, fail closed on stale
approvals, duplicates, positions and P&L, the kill switch, and a restart that never re-sends."""

from __future__ import annotations

import msgspec
import pytest

from libs.common import signing
from libs.common.clock import SimClock
from libs.common.config import SimSettings
from proto.alerts import Alert
from proto.control import Control, ControlAck
from proto.execution import Fill, OrderEvent, PositionSnapshot
from proto.orders import OrderApproved
from services.execution.core import Cancel, JournalRecord, Outcome, Replace, Send, Tactic
from services.execution.simbroker import SimVenue
from services.risk.core import RiskCore
from tests.kit import cores, stubs
from tests.kit.clocks import MS
from tests.kit.clocks import T0 as T


class Harness:
    """The runtime's job, in memory: journal, then act; market data to the broker and the core."""

    def __init__(self, **cfg: object) -> None:
        self.clock = SimClock(T)
        self.core = cores.execution(self.clock, **cfg)
        self.broker = SimVenue(SimSettings(commission="ib-fixed"))
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
            elif isinstance(action, Replace):
                assert self.journal[-1].kind == "replace"
                self.broker.replace(
                    action.client_order_id, self.clock.now_ns(), action.quantity, action.limit_price
                )
        self.events += out.events

    def quote(self, ts: int, bid: float, ask: float, size: float = 1000) -> None:
        self.clock.set(ts)
        self.core.on_quote(stubs.quote(ts=ts, bid=bid, ask=ask, bid_size=int(size), ask_size=int(size)))
        for report in self.broker.on_quote("IBM", ts, bid, ask, size, size):
            self.run(self.core.on_report(report))
        self.run(self.core.on_time(ts))

    def trade(self, ts: int, price: float, size: float = 100) -> None:
        self.clock.set(ts)
        for report in self.broker.on_trade("IBM", ts, price, size):
            self.run(self.core.on_report(report))
        self.run(self.core.on_time(ts))

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
        self.run(self.core.on_approved(stubs.sign(a)))

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
    h.run(h.core.on_approved(stubs.sign(stale)))
    assert h.sent == [] and h.statuses("old") == ["REJECTED"]
    assert "expired" in next(e for e in h.events if isinstance(e, OrderEvent)).reason
    h.approve("br", order_type="BRACKET")  # no exit prices: refused, never sent as something else
    assert h.statuses("br") == ["REJECTED"] and "take-profit" in h.core.orders["br"].reason
    h.approve("bad", order_type="BRACKET", take_profit_price=99.0, stop_loss_price=101.0)
    assert h.statuses("bad") == ["REJECTED"] and "wrong sides" in h.core.orders["bad"].reason
    h.approve("tr", side="SELL", order_type="TRAIL")
    assert h.statuses("tr") == ["REJECTED"] and "trail" in h.core.orders["tr"].reason
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
    out = h.core.on_control(kill)
    h.run(out)
    assert [r.kind for r in h.journal] == ["send", "send", "cancel", "send"]  # the cancel and the flatten
    (ack,) = [e for e in out.events if isinstance(e, ControlAck)]
    assert (ack.service, ack.command_id, ack.accepted) == ("execution", "k1", True)
    assert ack.counts == {"orders_cancelled": 1.0, "flatten_orders": 1.0}
    assert "1 open order(s) cancelled" in ack.summary and "SELL 100 IBM" in ack.summary
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
    fresh = cores.execution(SimClock(T + 100 * MS))
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
    assert fresh.on_approved(stubs.sign(a)).actions == []  # the redelivered one: not a second order


def test_a_restart_does_not_hold_open_what_the_journal_says_ended() -> None:
    h = Harness()
    h.approve("c1")
    h.approve("c2")
    ended = JournalRecord("done", "c1", T + 50 * MS, reason="FILLED")
    fresh = cores.execution(SimClock(T + 100 * MS))
    events = fresh.restore([*h.journal, ended])
    assert [(e.client_order_id, e.status) for e in events if isinstance(e, OrderEvent)] == [
        ("c2", "UNRESOLVED")
    ]
    assert fresh.stats["settled_before_restart"] == 1 and "c1" not in fresh.working


def test_a_forged_approval_is_refused_first_journaled_never_and_kept_as_a_dead_letter() -> None:
    h = Harness()
    unsigned = stubs.approved("f1", signed=False, ts=T)
    wrong_key = stubs.sign(stubs.approved("f2", signed=False, ts=T), key="not-the-gates-key")
    tampered = msgspec.structs.replace(stubs.approved("f3", ts=T), quantity=10_000.0)
    for forged, reason, why in (
        (unsigned, "signature_missing", "approval signature missing"),
        (wrong_key, "signature_invalid", "approval signature invalid: not signed by the risk gate"),
        (tampered, "signature_invalid", "approval signature invalid: not signed by the risk gate"),
    ):
        out = h.core.on_approved(forged)
        assert out.actions == []  # nothing journaled, nothing sent
        assert out.dead_letter == (reason, why)
        (event,) = [e for e in out.events if isinstance(e, OrderEvent)]
        assert event.client_order_id == forged.client_order_id
        assert (event.status, event.reason) == ("REJECTED", why)
        (alert,) = [e for e in out.events if isinstance(e, Alert)]
        assert alert.severity == "critical" and alert.dedupe == "approval-signature"
        assert alert.labels["reason"] == reason and forged.client_order_id in alert.title
        assert forged.client_order_id not in h.core.orders  # not an order: it may not block one
        h.run(out)
    assert h.journal == [] and h.sent == []
    assert h.core.stats["refused_signature_missing"] == 1 and h.core.stats["refused_signature_invalid"] == 2
    alerts = [e for e in h.events if isinstance(e, Alert)]
    assert len({a.alert_id for a in alerts}) == 3  # one per occurrence; the dedupe key folds a flood
    # The genuine approval of an id a forgery borrowed still goes through, and its events do
    # not share a stream message id with the forgery's REJECTED (seq -1, outside any lifecycle).
    h.approve("f1")
    assert h.sent == ["f1"] and h.statuses("f1")[-1] == "PENDING_SUBMIT"
    f1 = [e for e in h.events if isinstance(e, OrderEvent) and e.client_order_id == "f1"]
    assert f1[0].seq == -1 and f1[0].status == "REJECTED" and all(e.seq >= 0 for e in f1[1:])
    assert len({e.dedupe_key() for e in f1}) == len(f1)


def test_a_forgery_of_a_working_orders_id_is_refused_without_touching_that_order() -> None:
    h = Harness()
    h.approve("c1", order_type="LMT", limit_price=99.0)  # rests
    forged = stubs.approved("c1", signed=False, quantity=5_000, ts=T)
    out = h.core.on_approved(forged)
    assert out.actions == [] and out.dead_letter is not None
    assert not [e for e in out.events if isinstance(e, OrderEvent)]  # no REJECTED for the real c1
    assert [type(e).__name__ for e in out.events] == ["Alert"]
    assert h.core.orders["c1"].status == "PENDING_SUBMIT" and h.core.orders["c1"].quantity == 100


def test_a_forgery_is_refused_even_while_killed_and_before_the_expiry_check() -> None:
    h = Harness()
    h.core.killed = True
    stale = stubs.approved("x1", signed=False, ts=T - 10_000 * MS)
    out = h.core.on_approved(stale)
    assert out.dead_letter == ("signature_missing", signing.MISSING)


def test_without_a_key_every_approval_is_refused_however_it_is_signed() -> None:
    core = cores.execution(SimClock(T), approval_key=b"")
    for a in (stubs.approved("k1", ts=T), stubs.approved("k2", signed=False, ts=T)):
        out = core.on_approved(a)
        assert out.actions == [] and out.dead_letter == ("no_approval_key", signing.NO_KEY)
        (alert,) = [e for e in out.events if isinstance(e, Alert)]
        assert alert.severity == "critical" and alert.dedupe == "approval-key-missing"
    assert core.stats["refused_no_approval_key"] == 2 and core.stats["sent"] == 0


def test_the_risk_gates_approvals_are_the_ones_execution_takes() -> None:
    clock = SimClock(T)
    risk = cores.risk(clock)
    risk.on_quote(stubs.quote(ts=T))
    approval = risk.on_intent(stubs.intent(quantity=100, ts=T))
    assert isinstance(approval, OrderApproved) and approval.signature
    assert signing.verify(approval, stubs.TEST_APPROVAL_KEY.encode())
    h = Harness()
    h.run(h.core.on_approved(approval))
    assert h.sent == [approval.client_order_id]
    # A gate without a key signs nothing: its approvals are refused.
    unkeyed = RiskCore(risk.limits, clock, cores.calendar())
    unkeyed.on_quote(stubs.quote(ts=T))
    plain = unkeyed.on_intent(stubs.intent(quantity=100, ts=T))
    assert isinstance(plain, OrderApproved) and plain.signature == ""
    assert h.core.on_approved(plain).dead_letter == ("signature_missing", signing.MISSING)


def fills_of(h: Harness, cid: str) -> list[Fill]:
    return [e for e in h.events if isinstance(e, Fill) and e.client_order_id == cid]


def test_a_bracket_enters_then_its_take_profit_fills_and_cancels_the_stop() -> None:
    h = Harness()
    h.approve("b1", order_type="BRACKET", take_profit_price=100.50, stop_loss_price=99.50)
    assert [(r.client_order_id, r.order_type) for r in h.journal] == [
        ("b1", "MKT"),
        ("b1.tp", "LMT"),
        ("b1.sl", "STP"),
    ]
    h.quote(T + 20 * MS, 100.00, 100.02)
    assert h.statuses("b1")[-1] == "FILLED" and h.core.positions["IBM"].quantity == 100
    h.trade(T + 30 * MS, 99.60)  # above the stop: nothing
    assert h.statuses("b1.sl")[-1] == "SUBMITTED"
    h.quote(T + 40 * MS, 100.55, 100.57)  # the market moves through the take-profit
    h.quote(T + 60 * MS, 100.55, 100.57)
    assert h.statuses("b1.tp")[-1] == "FILLED" and fills_of(h, "b1.tp")[0].price == 100.50
    assert h.statuses("b1.sl")[-1] == "CANCELLED"
    assert "OCA" in h.core.orders["b1.sl"].reason
    assert h.core.positions["IBM"].quantity == 0


def test_a_bracket_stop_loss_fires_on_a_trade_through_its_stop() -> None:
    h = Harness()
    h.approve("b1", "SELL", order_type="BRACKET", take_profit_price=99.00, stop_loss_price=100.40)
    h.quote(T + 20 * MS, 100.00, 100.02)
    assert h.core.positions["IBM"].quantity == -100
    h.quote(T + 30 * MS, 100.40, 100.42)
    h.trade(T + 31 * MS, 100.41)  # at or through the buy stop: it triggers, buys at the ask
    h.quote(T + 50 * MS, 100.40, 100.42)
    assert h.statuses("b1.sl")[-1] == "FILLED" and fills_of(h, "b1.sl")[0].price == 100.42
    assert h.statuses("b1.tp")[-1] == "CANCELLED" and h.core.positions["IBM"].quantity == 0


def test_a_trailing_stop_follows_the_best_price_then_sells() -> None:
    h = Harness()
    h.approve("b1")
    h.quote(T + 20 * MS, 100.00, 100.02)
    h.approve("t1", "SELL", order_type="TRAIL", trail_amount=0.30)
    h.quote(T + 40 * MS, 100.00, 100.02)  # starts at the bid: stop 99.70
    assert h.broker.orders["t1"].stop_price == pytest.approx(99.70)
    for k, price in enumerate([100.20, 100.60, 100.45]):  # peak 100.60: stop 100.30
        h.trade(T + (50 + k) * MS, price)
    assert h.broker.orders["t1"].stop_price == pytest.approx(100.30)
    h.quote(T + 60 * MS, 100.28, 100.30)
    h.trade(T + 61 * MS, 100.29)  # through the stop
    h.quote(T + 80 * MS, 100.28, 100.30)
    assert h.statuses("t1")[-1] == "FILLED" and fills_of(h, "t1")[0].price == 100.28
    assert h.core.positions["IBM"].quantity == 0


def test_a_limit_tactic_rests_at_the_touch_then_chases_to_the_far_touch() -> None:
    h = Harness(tactic_style="LMT", limit_offset_bps=0.0, chase_after_ms=1000)
    h.approve("c1", qty=100)
    assert h.journal[0].order_type == "LMT" and h.journal[0].limit_price == 99.99  # the bid
    h.quote(T + 20 * MS, 99.99, 100.01)
    assert h.statuses("c1") == ["PENDING_SUBMIT", "SUBMITTED"] and not fills_of(h, "c1")
    h.quote(T + 1_100 * MS, 100.00, 100.02)  # waited a second: reprice to the ask
    assert [r.kind for r in h.journal] == ["send", "replace"] and h.journal[1].limit_price == 100.02
    h.quote(T + 1_200 * MS, 100.00, 100.02)
    assert h.statuses("c1")[-1] == "FILLED" and fills_of(h, "c1")[0].price == 100.02
    assert fills_of(h, "c1")[0].order_ref == "c1/1"
    assert h.core.stats["chases"] == 1


def test_a_passive_limit_that_is_traded_through_fills_as_the_maker() -> None:
    h = Harness(tactic_style="LMT", limit_offset_bps=0.0, chase_after_ms=10_000)
    h.approve("c1", side="SELL")  # rests on the ask, 100.01
    h.quote(T + 20 * MS, 99.99, 100.01)
    h.trade(T + 30 * MS, 100.03)
    h.quote(T + 40 * MS, 100.02, 100.04)
    fill = fills_of(h, "c1")[0]
    assert (fill.price, fill.liquidity) == (100.01, "ADD") and h.core.stats["chases"] == 0


def test_slices_go_one_after_another_and_publish_as_one_order() -> None:
    h = Harness(slice_shares=100)
    h.approve("c1", qty=250)
    for k in range(1, 5):
        h.quote(T + k * 20 * MS, 100.00, 100.02, size=100)  # only 100 shown at the touch
    assert [r.client_order_id for r in h.journal] == ["c1/1", "c1/2", "c1/3"]
    assert [r.quantity for r in h.journal] == [100, 100, 50]
    assert h.statuses("c1")[-1] == "FILLED"
    assert {f.price for f in fills_of(h, "c1")} == {100.01, 100.02}  # never walked past the touch
    assert sum(f.quantity for f in fills_of(h, "c1")) == 250


def test_feedback_is_applied_only_when_enabled_and_only_within_bounds() -> None:
    from proto.tca import TcaFeedback

    fb = TcaFeedback(
        ts_event=T, ts_init=T, feedback_id="f", symbol="IBM", style="LMT", limit_offset_bps=50, slice_shares=7
    )
    off = Harness()
    assert off.core.on_feedback(fb) is False and off.core.tactic_for("IBM") == Tactic()
    on = Harness(feedback=True, feedback_max_offset_bps=2.0, feedback_min_slice_shares=100)
    assert on.core.on_feedback(fb) is True
    assert on.core.tactic_for("IBM") == Tactic("LMT", 2.0, 2000.0, 100.0)
    assert on.core.stats["feedback_clamped"] == 1
    on.approve("c1", qty=100)
    assert on.journal[0].order_type == "LMT" and on.journal[0].limit_price == 100.01  # bid + 2 bps, <= ask


def test_an_operator_can_cancel_or_shrink_one_order() -> None:
    h = Harness()
    h.approve("l1", qty=300, order_type="LMT", limit_price=99.50)
    h.quote(T + 20 * MS, 99.99, 100.01)

    acks: list[ControlAck] = []

    def control(command: str, **args: str) -> None:
        command_id = f"{command}-{len(acks)}"  # each one new: a command id seen before is skipped
        c = Control(ts_event=T, ts_init=T, command_id=command_id, command=command, issued_by="ops", args=args)
        out = h.core.on_control(c)
        acks.extend(e for e in out.events if isinstance(e, ControlAck))
        h.run(out)

    control("replace", client_order_id="l1", quantity="400")  # more shares need an approval
    assert h.core.stats["control_replace_refused"] == 1
    assert not acks[-1].accepted and "more shares need a new approval" in acks[-1].summary
    control("replace", client_order_id="nope", quantity="100")
    assert not acks[-1].accepted and acks[-1].summary == "order nope is unknown"
    control("replace", client_order_id="l1", quantity="-5")  # malformed: refused before any action
    assert not acks[-1].accepted and "quantity must be a positive number" in acks[-1].summary
    control("replace", client_order_id="l1", quantity="200", limit_price="99.60")
    assert acks[-1].accepted and acks[-1].summary.endswith("quantity 200, limit 99.6")
    h.quote(T + 40 * MS, 99.99, 100.01)
    assert h.core.orders["l1"].quantity == 200 and h.broker.orders["l1"].limit_price == 99.60
    control("cancel", client_order_id="l1")
    h.quote(T + 60 * MS, 99.99, 100.01)
    assert h.statuses("l1")[-1] == "CANCELLED"
    assert [r.kind for r in h.journal] == ["send", "replace", "cancel"]
    assert acks[-1].accepted and acks[-1].summary == "cancel of l1 sent to the broker"


def test_a_restart_restores_worked_orders_under_their_approved_id() -> None:
    h = Harness(slice_shares=100)
    h.approve("c1", qty=250)
    fresh = cores.execution(SimClock(T + 100 * MS))
    events = fresh.restore(list(h.journal))
    assert [(e.client_order_id, e.quantity, e.status) for e in events if isinstance(e, OrderEvent)] == [
        ("c1", 250, "UNRESOLVED")
    ]
    assert fresh.route == {"c1/1": "c1"}


def test_a_kill_is_obeyed_whatever_its_arguments_and_a_stale_command_is_not() -> None:
    h = Harness()
    h.approve("l1", "BUY", 100, order_type="LMT", limit_price=99.50)  # rests
    h.quote(T + 20 * MS, 100.00, 100.02)
    # A script's kill with arguments no sender should add: it still kills (fail closed).
    kill = Control(
        ts_event=T,
        ts_init=T,
        command_id="k-script",
        command="kill",
        issued_by="script",
        args={"reason": "drill", "flatten": "True"},
    )
    out = h.core.on_control(kill)
    h.run(out)
    (ack,) = [e for e in out.events if isinstance(e, ControlAck)]
    assert h.core.killed and ack.accepted and ack.counts["orders_cancelled"] == 1
    assert "ignored: kill takes no argument 'reason'; flatten must be true or false" in ack.summary
    # A resume read two minutes after it was sent (its service was down) is not acted on.
    now = h.clock.now_ns()
    stale = Control(
        ts_event=now - 120 * 10**9, ts_init=now, command_id="r-old", command="resume", issued_by="ops"
    )
    (refused,) = h.core.on_control(stale).events
    assert isinstance(refused, ControlAck) and not refused.accepted and refused.summary.startswith("expired")
    assert h.core.killed
    # set_mode is the risk gate's: execution neither acts nor answers.
    mode = Control(
        ts_event=now, ts_init=now, command_id="m", command="set_mode", issued_by="ops", args={"mode": "x"}
    )
    assert h.core.on_control(mode).events == []


def test_an_order_the_broker_rejects_is_an_alert_naming_the_reason() -> None:
    from proto.alerts import Alert
    from services.execution.broker import BrokerReport

    h = Harness()
    h.approve("l1", "BUY", 100, order_type="LMT", limit_price=99.50)
    child = h.core.working["l1"].child
    out = h.core.on_report(BrokerReport("rejected", child, T + 30 * MS, T + 30 * MS, reason="201 margin"))
    (alert,) = [e for e in out.events if isinstance(e, Alert)]
    assert alert.severity == "warning" and alert.source == "execution"
    assert alert.title == "order BUY 100 IBM rejected by the broker: 201 margin"
    assert h.core.orders["l1"].status == "REJECTED"

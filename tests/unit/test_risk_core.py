"""The risk gate's denial matrix: each rule denies with its code, exits pass where entries may not,
modes move as the feed and the operator say, and it fails closed."""

from __future__ import annotations

from typing import Any

import pytest

from libs.common.clock import SimClock
from proto.alerts import Alert
from proto.control import Control, ControlAck
from proto.execution import OrderEvent
from proto.market import FeedStatus
from proto.orders import OrderApproved, OrderDenied, OrderIntent
from services.risk.core import RiskCore, client_order_id_for
from tests.kit import cores, stubs

T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York (a Tuesday)
S = 1_000_000_000
N = 0


def _id() -> str:
    global N
    N += 1
    return f"i-{N}"


def quote(core: RiskCore, ts: int = T0, bid: float = 99.99, ask: float = 100.01, sym: str = "IBM") -> None:
    core.on_event(stubs.quote(sym, ts, bid, ask))


def intent(side: str = "BUY", qty: float = 100, ts: int = T0 + S, sym: str = "IBM", **kw: Any) -> OrderIntent:
    return stubs.intent(sym, side, qty, ts, intent_id=_id(), **{"ts_init": T0, **kw})


def fill(core: RiskCore, side: str, qty: float, price: float, ts: int = T0 + 2 * S, sym: str = "IBM") -> None:
    core.on_event(stubs.fill(sym, side, qty, price, ts, exec_id=_id(), client_order_id="x", commission=1.0))


def gate(**limits: Any) -> RiskCore:
    core = cores.risk(SimClock(T0), **limits)
    quote(core)
    return core


def denied(decision: object, code: str) -> OrderDenied:
    assert isinstance(decision, OrderDenied), decision
    assert decision.code == code, decision.describe()
    return decision


def test_a_plain_entry_is_approved_with_a_stable_client_order_id() -> None:
    core = gate()
    i = intent()
    ok = core.on_intent(i)
    assert isinstance(ok, OrderApproved) and ok.client_order_id == client_order_id_for(i.intent_id)
    assert ok.valid_until_ns == T0 + int(2_000 * 1e6) and ok.quantity == 100
    again = core.on_intent(i)  # redelivered: the same approval, not a second order
    assert isinstance(again, OrderApproved) and again.client_order_id == ok.client_order_id
    assert core.stats["approved"] == 1 and core.stats["duplicate_intents"] == 1


DENIALS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    # (case, limits, intent fields, code)
    ("denied symbol", {"deny_symbols": frozenset({"IBM"})}, {}, "SYMBOL_DENIED"),
    ("not allowed", {"allow_symbols": frozenset({"BAC"})}, {}, "SYMBOL_NOT_ALLOWED"),
    ("before the open", {}, {"ts": T0 - 45 * 60 * S}, "SESSION_CLOSED"),
    ("no quote", {}, {"sym": "BAC"}, "PRICE_NO_QUOTE"),
    ("stale quote", {"max_quote_age_ms": 500}, {"ts": T0 + S}, "PRICE_QUOTE_STALE"),
    ("far limit", {}, {"order_type": "LMT", "limit_price": 101.0}, "PRICE_LIMIT_FAR"),
    ("shares", {"max_position_shares": 50}, {}, "POSITION_SHARES"),
    ("notional", {"max_position_notional": 5_000}, {}, "POSITION_NOTIONAL"),
    ("gross", {"max_gross_exposure": 5_000}, {}, "EXPOSURE_GROSS"),
    ("net", {"max_net_exposure": 5_000}, {}, "EXPOSURE_NET"),
    ("buying power", {"account_equity": 4_000, "margin_multiplier": 2.0}, {}, "MARGIN_BUYING_POWER"),
    ("not shortable", {"shortable": frozenset({"BAC"})}, {"side": "SELL"}, "SHORT_NOT_SHORTABLE"),
    ("ssr market", {"ssr_symbols": frozenset({"IBM"})}, {"side": "SELL"}, "SHORT_SSR_UPTICK"),
    (
        "ssr at bid",
        {"ssr_symbols": frozenset({"IBM"})},
        {"side": "SELL", "order_type": "LMT", "limit_price": 99.99},
        "SHORT_SSR_UPTICK",
    ),
    (
        "ssr above bid",
        {"ssr_symbols": frozenset({"IBM"})},
        {"side": "SELL", "order_type": "LMT", "limit_price": 100.0},
        "APPROVED",
    ),
    ("observe", {"initial_mode": "OBSERVE"}, {}, "MODE_OBSERVE"),
    ("bracket without exits", {}, {"order_type": "BRACKET"}, "ORDER_INVALID"),
    (
        "bracket exits swapped",
        {},
        {"order_type": "BRACKET", "take_profit_price": 99.0, "stop_loss_price": 101.0},
        "ORDER_INVALID",
    ),
    (
        "bracket",
        {},
        {"order_type": "BRACKET", "take_profit_price": 101.0, "stop_loss_price": 99.0},
        "APPROVED",
    ),
    ("trail without a trail", {}, {"side": "SELL", "order_type": "TRAIL"}, "ORDER_INVALID"),
    ("limit without a price", {}, {"order_type": "LMT"}, "ORDER_INVALID"),
]


@pytest.mark.parametrize(("case", "limits", "fields", "code"), DENIALS, ids=[d[0] for d in DENIALS])
def test_denial_matrix(case: str, limits: dict[str, Any], fields: dict[str, Any], code: str) -> None:
    core = gate(**limits)
    decision = core.on_intent(intent(**fields))
    if code == "APPROVED":
        assert isinstance(decision, OrderApproved), decision
        # everything the execution gateway needs to send it as asked travels with the approval
        assert all(getattr(decision, k) == v for k, v in fields.items() if hasattr(decision, k))
    else:
        d = denied(decision, code)
        assert d.describe().startswith(code) and "=" in d.describe()


def test_bad_sizes_are_refused_before_anything_else() -> None:
    core = gate(initial_mode="EMERGENCY")
    i = OrderIntent(
        ts_event=T0 + S, ts_init=0, intent_id="bad", symbol="IBM", side="BUY", quantity=float("inf")
    )
    denied(core.on_intent(i), "SIZE_INVALID")


def test_a_stale_intent_is_history_not_a_decision() -> None:
    core = gate(max_intent_age_ms=1_000)
    old = OrderIntent(
        ts_event=T0 + S, ts_init=T0 - 5 * S, intent_id="old", symbol="IBM", side="BUY", quantity=1
    )
    denied(core.on_intent(old), "INTENT_STALE")


def test_order_rate_and_open_orders() -> None:
    core = gate(max_orders_per_minute=2)
    assert isinstance(core.on_intent(intent(qty=1)), OrderApproved)
    assert isinstance(core.on_intent(intent(qty=1)), OrderApproved)
    denied(core.on_intent(intent(qty=1)), "ORDERS_RATE")
    quote(core, ts=T0 + 61 * S)
    assert isinstance(core.on_intent(intent(qty=1, ts=T0 + 62 * S)), OrderApproved)  # the minute rolled

    opened = gate(max_open_orders=1)
    first = opened.on_intent(intent(qty=1))
    assert isinstance(first, OrderApproved)
    denied(opened.on_intent(intent(qty=1)), "ORDERS_OPEN")
    opened.on_event(
        OrderEvent(
            ts_event=T0 + S,
            ts_init=0,
            client_order_id=first.client_order_id,
            symbol="IBM",
            status="CANCELLED",
            seq=2,
        )
    )
    assert isinstance(opened.on_intent(intent(qty=1)), OrderApproved)


def test_daily_loss_and_drawdown_stop_entries_but_not_exits() -> None:
    core = gate(daily_loss_limit=500)
    fill(core, "BUY", 100, 100.0)
    quote(core, ts=T0 + 3 * S, bid=94.99, ask=95.01)  # -500 unrealized, -1 commission
    denied(core.on_intent(intent(qty=10, ts=T0 + 4 * S)), "LOSS_DAILY_LIMIT")
    assert isinstance(core.on_intent(intent("SELL", 100, ts=T0 + 4 * S)), OrderApproved)  # the exit

    dd = gate(max_drawdown=300, daily_loss_limit=10_000)
    fill(dd, "BUY", 100, 100.0)
    quote(dd, ts=T0 + 3 * S, bid=104.99, ask=105.01)
    assert isinstance(dd.on_intent(intent(qty=1, ts=T0 + 4 * S)), OrderApproved)  # peak +499
    quote(dd, ts=T0 + 5 * S, bid=101.99, ask=102.01)
    denied(dd.on_intent(intent(qty=1, ts=T0 + 6 * S)), "LOSS_DRAWDOWN")


def test_consecutive_losses_start_a_cooldown() -> None:
    core = gate(max_consecutive_losses=2, loss_cooldown_s=600)
    for k in range(2):
        fill(core, "BUY", 10, 100.0, ts=T0 + (10 + 2 * k) * S)
        fill(core, "SELL", 10, 99.0, ts=T0 + (11 + 2 * k) * S)
    assert core.books.consecutive_losses == 2
    quote(core, ts=T0 + 20 * S)
    d = denied(core.on_intent(intent(qty=1, ts=T0 + 21 * S)), "LOSS_COOLDOWN")
    assert d.context["losses"] == "2"
    quote(core, ts=T0 + 15 * 60 * S)
    assert isinstance(core.on_intent(intent(qty=1, ts=T0 + 15 * 60 * S + 1)), OrderApproved)


def test_pattern_day_trader_rule_is_a_switch() -> None:
    def round_trips(core: RiskCore) -> None:
        for k in range(3):
            fill(core, "BUY", 10, 100.0, ts=T0 + (10 + 2 * k) * S)
            fill(core, "SELL", 10, 100.5, ts=T0 + (11 + 2 * k) * S)
        quote(core, ts=T0 + 30 * S)

    on = gate(pdt_enabled=True, account_equity=20_000)
    round_trips(on)
    denied(on.on_intent(intent(qty=1, ts=T0 + 31 * S)), "PDT_LIMIT")
    off = gate(pdt_enabled=False, account_equity=20_000)
    round_trips(off)
    assert isinstance(off.on_intent(intent(qty=1, ts=T0 + 31 * S)), OrderApproved)


def test_volatility_sizing_and_kelly_cap() -> None:
    core = gate(risk_per_trade=200, atr_stop_multiple=2.0)
    core.on_volatility("IBM", 0.5)  # 200 / (2 x 0.5) = 200 shares at most
    assert isinstance(core.on_intent(intent(qty=200)), OrderApproved)
    d = denied(core.on_intent(intent(qty=201)), "SIZE_VOLATILITY")
    assert d.context["max"] == "200"
    kelly = gate(kelly_fraction=0.5, kelly_min_trades=4, account_equity=100_000)
    for k, exit_price in enumerate([101.0, 99.0, 99.0, 99.0]):  # 1 win of +1, 3 losses of -1 a share
        fill(kelly, "BUY", 10, 100.0, ts=T0 + (10 + 2 * k) * S)
        fill(kelly, "SELL", 10, exit_price, ts=T0 + (11 + 2 * k) * S)
    quote(kelly, ts=T0 + 30 * S)
    # win rate 0.25, payoff < 1: Kelly says no edge, so no entry of any size.
    denied(kelly.on_intent(intent(qty=1, ts=T0 + 31 * S)), "SIZE_KELLY")


def test_exits_never_go_through_zero_and_count_orders_in_flight() -> None:
    core = gate()
    fill(core, "BUY", 100, 100.0)
    first = core.on_intent(intent("SELL", 100, ts=T0 + 3 * S))
    assert isinstance(first, OrderApproved)
    # The first exit is in flight: a second one would flip the position short, so it is an entry
    # (short), judged as one; with shorts off it is denied.
    strict = gate(shortable=frozenset())
    fill(strict, "BUY", 100, 100.0)
    assert isinstance(strict.on_intent(intent("SELL", 100, ts=T0 + 3 * S)), OrderApproved)
    denied(strict.on_intent(intent("SELL", 100, ts=T0 + 3 * S)), "SHORT_NOT_SHORTABLE")


def test_feed_loss_degrades_to_exits_only_and_recovery_restores() -> None:
    core = gate()
    fill(core, "BUY", 100, 100.0)
    states = core.on_event(FeedStatus(ts_event=T0 + 3 * S, ts_init=0, source="ib", state="stale", seq=1))
    assert core.mode == "DEGRADED" and states and states[0].mode == "DEGRADED"
    denied(core.on_intent(intent(qty=1, ts=T0 + 4 * S)), "MODE_DEGRADED")
    assert isinstance(core.on_intent(intent("SELL", 50, ts=T0 + 4 * S)), OrderApproved)
    core.on_event(FeedStatus(ts_event=T0 + 5 * S, ts_init=0, source="ib", state="recovered", seq=2))
    assert core.mode == "LIVE"


def test_the_hub_unreachable_degrades_to_exits_only_until_it_is_back() -> None:
    core = gate()
    fill(core, "BUY", 100, 100.0)
    out = core.on_hub(False, "no heartbeat from qos for 10 s", T0 + 3 * S)
    assert core.mode == "DEGRADED" and core.mode_reason == "hub unreachable: no heartbeat from qos for 10 s"
    (alert,) = [e for e in out if isinstance(e, Alert)]
    assert alert.title.startswith("risk mode LIVE -> DEGRADED: hub unreachable")
    denied(core.on_intent(intent(qty=1, ts=T0 + 4 * S)), "MODE_DEGRADED")
    assert isinstance(core.on_intent(intent("SELL", 50, ts=T0 + 4 * S)), OrderApproved)
    core.on_hub(True, "", T0 + 5 * S)
    assert core.mode == "LIVE"


def test_every_model_quarantined_is_observe_with_its_exits_until_one_serves_again() -> None:
    core = gate()
    fill(core, "BUY", 100, 100.0)

    def predict(horizon: str, quarantined: bool, ts: int = T0 + 3 * S) -> list[Any]:
        return core.on_event(stubs.prediction(horizon=horizon, ts=ts, quarantined=quarantined))

    assert predict("5m", False) + predict("15m", False) == []  # nothing changes: no event
    predict("5m", True)
    assert core.mode == "LIVE"  # one model out: the others still serve
    out = predict("15m", True)
    assert core.mode == "OBSERVE" and core.mode_reason == "every fast-lane model quarantined (5m, 15m)"
    (alert,) = [e for e in out if isinstance(e, Alert)]
    assert alert.title == "risk mode LIVE -> OBSERVE: every fast-lane model quarantined (5m, 15m)"
    entry = denied(core.on_intent(intent(qty=1, ts=T0 + 4 * S)), "MODE_OBSERVE")
    assert entry.context["allowed"] == "exits"
    # the position's exit passes: a quarantine must not strand it
    assert isinstance(core.on_intent(intent("SELL", 50, ts=T0 + 4 * S)), OrderApproved)
    # an operator's OBSERVE is another thing: nothing passes, exits included
    observe = Control(
        ts_event=T0 + 4 * S,
        ts_init=0,
        command_id="o",
        command="set_mode",
        issued_by="ops",
        args={"mode": "OBSERVE"},
    )
    core.on_event(observe)
    denied(core.on_intent(intent("SELL", 10, ts=T0 + 4 * S)), "MODE_OBSERVE")
    live = Control(
        ts_event=T0 + 4 * S,
        ts_init=0,
        command_id="l",
        command="set_mode",
        issued_by="ops",
        args={"mode": "LIVE"},
    )
    core.on_event(live)
    assert core.mode == "OBSERVE"  # still held by the quarantine
    predict("15m", False, T0 + 5 * S)  # a promoted 15m model serves
    assert core.mode == "LIVE"


def test_kill_is_emergency_until_an_explicit_resume_and_set_mode() -> None:
    core = gate()

    def ctl(command: str, **args: str) -> ControlAck:
        out = core.on_event(
            Control(
                ts_event=T0 + S,
                ts_init=0,
                command_id=_id(),
                command=command,
                issued_by="ops",  # type: ignore[arg-type]
                args=args,
            )
        )
        (ack,) = [e for e in out if isinstance(e, ControlAck)]
        assert ack.service == "risk" and ack.command == command
        return ack

    assert ctl("kill").summary == "mode LIVE -> EMERGENCY"
    denied(core.on_intent(intent()), "MODE_EMERGENCY")
    refused = ctl("set_mode", mode="LIVE")  # refused: EMERGENCY is left by resume only
    assert core.mode == "EMERGENCY" and core.stats["mode_change_refused"] == 1
    assert not refused.accepted and "resume first" in refused.summary
    assert not ctl("set_mode", mode="LIVEE").accepted  # a typo never changes the mode
    core.on_event(FeedStatus(ts_event=T0 + 2 * S, ts_init=0, source="ib", state="recovered", seq=1))
    assert core.mode == "EMERGENCY"  # a recovering feed does not undo a kill
    assert ctl("resume").summary == "mode EMERGENCY -> OBSERVE"
    assert core.mode == "OBSERVE"
    denied(core.on_intent(intent()), "MODE_OBSERVE")
    ctl("set_mode", mode="LIVE")
    assert isinstance(core.on_intent(intent()), OrderApproved)


def test_a_failing_rule_denies() -> None:
    core = gate()
    core.books.positions = None  # type: ignore[assignment]  # a bug anywhere in the books
    denied(core.on_intent(intent()), "RISK_ERROR")
    assert core.stats["rule_errors"] == 1


def test_state_reports_positions_pnl_and_exposure() -> None:
    core = gate()
    fill(core, "BUY", 100, 100.0)
    fill(core, "SELL", 40, 101.0, ts=T0 + 3 * S)
    quote(core, ts=T0 + 4 * S, bid=101.99, ask=102.01)
    st = core.state(T0 + 4 * S)
    assert st.positions == {"IBM": 60.0}
    assert st.realized_pnl == pytest.approx(40 * 1.0 - 2.0)  # two commissions of 1
    assert st.unrealized_pnl == pytest.approx(60 * 2.0)
    assert st.gross_exposure == pytest.approx(60 * 102.0) and st.mode == "LIVE"


def test_a_restarted_gate_resumes_from_the_snapshot_and_its_last_state() -> None:
    from proto.execution import Position, PositionSnapshot
    from proto.orders import RiskState

    before = gate(max_position_shares=150)
    fill(before, "BUY", 100, 100.00)
    before.on_event(Control(ts_event=T0, ts_init=T0, command_id="k", command="kill", issued_by="ops"))
    state = before.state(T0 + 3 * S)
    snapshot = PositionSnapshot(
        ts_event=T0 + 2 * S,
        ts_init=0,
        account="SIM",
        seq=7,
        positions=[
            Position(
                symbol="IBM", quantity=100, avg_price=100.0, mark=100.0, realized_pnl=-1.0, unrealized_pnl=0
            )
        ],
        realized_pnl=-1.0,
        unrealized_pnl=0.0,
    )
    after = gate(max_position_shares=150)
    restored = after.restore(snapshot, state)
    assert len(restored) == 3 and after.mode == "EMERGENCY"  # a kill survives the restart
    assert after.books.positions["IBM"].quantity == 100
    after.on_event(Control(ts_event=T0, ts_init=T0, command_id="r", command="resume", issued_by="ops"))
    after.on_event(
        Control(
            ts_event=T0,
            ts_init=T0,
            command_id="m",
            command="set_mode",
            issued_by="ops",
            args={"mode": "LIVE"},
        )
    )
    denied(after.on_intent(intent(qty=100)), "POSITION_SHARES")  # 200 > 150: it knows the 100 held
    assert isinstance(after.on_intent(intent("SELL", 100)), OrderApproved)  # the exit is fine

    other = RiskState(**{**msgspec_fields(state), "account": "OTHER"})
    stranger = gate()
    assert stranger.restore(None, other) == [] and stranger.mode == "LIVE"  # not its account


def msgspec_fields(e: object) -> dict[str, Any]:
    import msgspec

    return msgspec.structs.asdict(e)  # type: ignore[arg-type]


def test_with_broker_what_if_on_an_entry_needs_the_brokers_yes() -> None:
    from proto.orders import MarginReply

    def reply(**kw: Any) -> MarginReply:
        return MarginReply(ts_event=T0, ts_init=T0, request_id="x", **kw)

    core = gate(broker_what_if=True)
    denied(core.on_intent(intent()), "MARGIN_UNKNOWN")  # no answer: fail closed
    denied(core.on_intent(intent(), reply(known=False, error="timeout")), "MARGIN_UNKNOWN")
    denied(core.on_intent(intent(), reply(known=True, error="201 no permissions")), "MARGIN_BROKER_REJECTED")
    short = reply(known=True, init_margin_after=120_000.0, equity_with_loan_after=100_000.0)
    d = denied(core.on_intent(intent(), short), "MARGIN_WHAT_IF")
    assert d.context == {"init_margin_after": "120000", "equity_with_loan": "100000"}
    fine = reply(known=True, init_margin_after=5_000.0, equity_with_loan_after=100_000.0)
    assert isinstance(core.on_intent(intent(), fine), OrderApproved)
    fill(core, "BUY", 100, 100.0)
    assert isinstance(core.on_intent(intent("SELL", 100)), OrderApproved)  # an exit needs no preview


def test_a_kill_with_odd_arguments_still_kills_and_a_stale_resume_does_nothing() -> None:
    core = gate()

    def ctl(command: str, ts: int, **args: str) -> ControlAck:
        out = core.on_event(
            Control(ts_event=ts, ts_init=ts, command_id=_id(), command=command, issued_by="x", args=args)  # type: ignore[arg-type]
        )
        (ack,) = [e for e in out if isinstance(e, ControlAck)]
        return ack

    assert ctl("kill", T0, reason="drill").accepted and core.mode == "EMERGENCY"
    stale = ctl("resume", T0 - 120 * S)  # sent two minutes before the gate read it
    assert not stale.accepted and stale.summary.startswith("expired") and core.mode == "EMERGENCY"
    assert ctl("resume", T0).accepted and core.mode == "OBSERVE"


def feed(core: RiskCore, state: str, symbol: str = "", source: str = "ib:1", seq: int = 1) -> list[object]:
    return core.on_event(
        FeedStatus(ts_event=T0 + seq * S, ts_init=0, source=source, state=state, seq=seq, symbol=symbol)  # type: ignore[arg-type]
    )


def test_the_mode_is_the_most_severe_of_its_causes_and_one_recovery_clears_only_its_own() -> None:
    core = gate()
    feed(core, "stale", "IBM", seq=1)
    feed(core, "stale", "BAC", seq=2)
    feed(core, "recovered", "IBM", seq=3)
    assert core.mode == "DEGRADED"  # BAC is still stale
    out = feed(core, "recovered", "BAC", seq=4)
    assert core.mode == "LIVE"
    (alert,) = [e for e in out if isinstance(e, Alert)]
    assert alert.title.startswith("risk mode DEGRADED -> LIVE") and alert.severity == "warning"
    # the operator's mode and a cause: the more severe holds, whichever came first
    feed(core, "disconnected", seq=5)
    live = Control(
        ts_event=T0 + 6 * S,
        ts_init=0,
        command_id="m1",
        command="set_mode",
        issued_by="ops",
        args={"mode": "LIVE"},
    )
    acks = [e for e in core.on_event(live) if isinstance(e, ControlAck)]
    assert core.mode == "DEGRADED" and "(held by feed disconnected" in acks[0].summary
    # a restarted gateway (another process, same feed) says it is connected: its causes clear
    feed(core, "connected", source="ib:2", seq=7)
    assert core.mode == "LIVE"


def test_a_kill_is_a_critical_alert_with_who_did_it() -> None:
    core = gate()
    out = core.on_event(Control(ts_event=T0, ts_init=0, command_id="k", command="kill", issued_by="alice"))
    (alert,) = [e for e in out if isinstance(e, Alert)]
    assert alert.severity == "critical" and alert.title == "risk mode LIVE -> EMERGENCY: kill by alice"


def test_the_first_daily_loss_denial_of_the_day_is_a_critical_alert_and_only_the_first() -> None:
    core = gate(daily_loss_limit=500)
    fill(core, "BUY", 100, 100.0)
    quote(core, ts=T0 + 3 * S, bid=94.99, ask=95.01)
    denied(core.on_intent(intent(qty=10, ts=T0 + 4 * S)), "LOSS_DAILY_LIMIT")
    (alert,) = core.take_alerts()
    assert alert.severity == "critical" and alert.source == "risk"
    assert alert.title == "daily loss limit hit: LOSS_DAILY_LIMIT denied BUY 10 IBM"
    assert alert.labels["limit"] == "-500"
    denied(core.on_intent(intent(qty=10, ts=T0 + 5 * S)), "LOSS_DAILY_LIMIT")
    assert core.take_alerts() == []  # once a day


def test_a_restart_keeps_the_cooldown_the_order_rate_window_and_the_operators_observe() -> None:
    before = gate(max_consecutive_losses=2, loss_cooldown_s=600, max_orders_per_minute=2)
    assert isinstance(before.on_intent(intent(qty=1, ts=T0 + 1 * S)), OrderApproved)
    assert isinstance(before.on_intent(intent(qty=1, ts=T0 + 2 * S)), OrderApproved)
    for k in range(2):
        fill(before, "BUY", 10, 100.0, ts=T0 + (10 + 2 * k) * S)
        fill(before, "SELL", 10, 99.0, ts=T0 + (11 + 2 * k) * S)
    before.on_event(
        Control(
            ts_event=T0,
            ts_init=T0,
            command_id="o",
            command="set_mode",
            issued_by="ops",
            args={"mode": "OBSERVE"},
        )
    )
    state = before.state(T0 + 20 * S)

    after = gate(max_consecutive_losses=2, loss_cooldown_s=600, max_orders_per_minute=2)
    after.restore(None, state)
    assert after.mode == "OBSERVE" and after.operator_mode == "OBSERVE"
    assert after.books.cooldown_until == before.books.cooldown_until > T0 + 20 * S
    assert list(after.books.approvals) == list(before.books.approvals)
    after.on_event(
        Control(
            ts_event=T0,
            ts_init=T0,
            command_id="l",
            command="set_mode",
            issued_by="ops",
            args={"mode": "LIVE"},
        )
    )
    quote(after, ts=T0 + 21 * S)
    denied(after.on_intent(intent(qty=1, ts=T0 + 21 * S)), "ORDERS_RATE")  # the minute's two approvals
    quote(after, ts=T0 + 90 * S)
    denied(after.on_intent(intent(qty=1, ts=T0 + 90 * S)), "LOSS_COOLDOWN")  # the losses' cool-down


def test_the_close_brings_the_days_summary_once() -> None:
    from libs.common.markettime import ny_time_ns

    core = gate(daily_loss_limit=500)
    fill(core, "BUY", 100, 100.0)
    fill(core, "SELL", 100, 101.0, ts=T0 + 5 * S)
    quote(core, ts=T0 + 6 * S, bid=94.99, ask=95.01)
    core.on_intent(intent(qty=10, ts=T0 + 7 * S))
    core.on_clock(ny_time_ns("20131008", "15:59"))
    assert core.take_alerts() == []  # not yet
    close = ny_time_ns("20131008", "16:00")
    core.on_clock(close)
    (summary,) = core.take_alerts()
    assert summary.severity == "info" and summary.ts_event == close
    assert summary.title.startswith(
        "day summary: realized P&L +98.00 USD, open +0.00; 2 fills, commissions 2.00;"
    )
    assert "1 approved, denials: none; mode LIVE" in summary.title
    core.on_clock(close + 60 * S)
    assert core.take_alerts() == []  # once a day


def test_a_replay_that_ends_before_the_close_still_summarizes_its_day() -> None:
    core = gate()
    fill(core, "BUY", 100, 100.0)
    quote(core, ts=T0 + 9 * S)
    core.on_event(
        FeedStatus(ts_event=T0 + 10 * S, ts_init=0, source="replay:1", state="replay_finished", seq=9)
    )
    (summary,) = core.take_alerts()
    assert summary.title.startswith("day summary: realized P&L -1.00 USD, open ")


def test_live_limits_apply_whole_from_the_next_intent_or_not_at_all() -> None:
    from proto.control import ConfigChange

    core = gate()
    quote(core)

    def change(values: dict[str, Any]) -> list[Any]:
        return core.on_event(
            ConfigChange(
                ts_event=T0 + S, ts_init=0, change_id=_id(), section="risk", values=values, issued_by="admin"
            )
        )

    assert isinstance(core.on_intent(intent(qty=100, ts=T0 + S)), OrderApproved)
    (ack,) = [
        e for e in change({"max_position_shares": 150, "max_open_orders": -1}) if isinstance(e, ControlAck)
    ]
    assert not ack.accepted and "max_open_orders" in ack.summary and core.limits.max_position_shares != 150
    out = change({"max_position_shares": 150})
    (ack,) = [e for e in out if isinstance(e, ControlAck)]
    assert ack.accepted and ack.command == "config" and core.limits.max_position_shares == 150
    denied(core.on_intent(intent(qty=100, ts=T0 + 2 * S)), "POSITION_SHARES")  # 100 working + 100 > 150

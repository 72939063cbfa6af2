"""Telegram operator commands, decided with no I/O: only allow-listed chats are obeyed (others are
refused and audited), a kill needs the same user's confirmation within the window, every Control
carries the operator's identity, and the read-only commands answer from what the fleet said."""

from __future__ import annotations

import itertools

from libs.common.clock import SimClock
from proto.control import ControlAck, ack_of
from proto.execution import OrderEvent, Position, PositionSnapshot
from proto.orders import RiskState
from proto.units import SECOND_NS
from services.alerts.commands import HELP, ChatMessage, Mute, OperatorCommands, Reaction, acks_reply

T0 = 1_381_240_800_000_000_000  # 2013-10-08 10:00 New York
ALLOWED = 1001
STRANGER = 666
ALICE = 7


def desk(confirm_window_s: float = 60) -> tuple[OperatorCommands, SimClock]:
    clock = SimClock(T0)
    ids = (f"k-{n}" for n in itertools.count(1))
    return OperatorCommands([ALLOWED], clock, confirm_window_s, new_command_id=lambda: next(ids)), clock


def said(text: str, chat: int = ALLOWED, user: int = ALICE, username: str = "alice") -> ChatMessage:
    return ChatMessage(chat_id=chat, user_id=user, username=username, text=text)


def risk_state(mode: str = "LIVE", **kw: object) -> RiskState:
    fields: dict[str, object] = {"ts_event": T0, "ts_init": T0, "instance": "risk-1", "seq": 1, "mode": mode}
    return RiskState(**(fields | kw))  # type: ignore[arg-type]


def order(cid: str, status: str, seq: int, **kw: object) -> OrderEvent:
    return OrderEvent(
        ts_event=T0 + seq,
        ts_init=T0 + seq,
        client_order_id=cid,
        symbol="IBM",
        status=status,  # type: ignore[arg-type]
        seq=seq,
        **kw,  # type: ignore[arg-type]
    )


def test_a_chat_not_allow_listed_is_refused_with_a_reply_and_an_audit_note() -> None:
    c, _ = desk()
    for text in ("/kill", "/kill confirm", "/status"):
        r = c.on_message(said(text, chat=STRANGER, username="mallory"))
        assert r.control is None and r.mute is None
        assert "not allowed" in r.reply and r.refused == f"chat {STRANGER} is not allow-listed"
    assert r.command == "/status"
    assert c.stats["commands_refused"] == 3 and c.stats["commands_obeyed"] == 0


def test_plain_text_is_ignored_everywhere() -> None:
    c, _ = desk()
    for m in (said("kill it all"), said("hello", chat=STRANGER), said("")):
        assert c.on_message(m) == Reaction()
    assert not c.stats


def test_kill_asks_to_confirm_and_only_the_same_user_in_the_window_sends_it() -> None:
    c, clock = desk(confirm_window_s=60)
    ask = c.on_message(said("/kill"))
    assert ask.control is None and "/kill confirm within 60 s" in ask.reply and "EMERGENCY" in ask.reply
    # Someone else in the chat, or the same user elsewhere, cannot confirm it.
    assert c.on_message(said("/kill confirm", user=8, username="bob")).control is None
    clock.advance(59 * SECOND_NS)
    kill = c.on_message(said("/kill confirm")).control
    assert kill is not None and kill.command == "kill" and kill.args == {}
    assert kill.issued_by == "telegram:alice@1001" and kill.command_id == "k-1"
    assert kill.ts_event == T0 + 59 * SECOND_NS
    # A confirmation is used once.
    again = c.on_message(said("/kill confirm"))
    assert again.control is None and "send /kill first" in again.reply


def test_a_late_confirmation_sends_nothing() -> None:
    c, clock = desk(confirm_window_s=60)
    c.on_message(said("/kill"))
    clock.advance(61 * SECOND_NS)
    late = c.on_message(said("/kill confirm"))
    assert late.control is None and "expired" in late.reply


def test_kill_flatten_carries_its_flatten_and_bad_kill_words_are_refused() -> None:
    c, _ = desk()
    assert "flattens every position" in c.on_message(said("/kill flatten")).reply
    kill = c.on_message(said("/kill@tradefleet_bot confirm")).control  # a group's form
    assert kill is not None and kill.args == {"flatten": "true"}
    assert c.on_message(said("/kill now")).control is None
    assert "only 'flatten'" in c.on_message(said("/kill now")).reply


def test_the_identity_is_the_user_id_when_there_is_no_username() -> None:
    c, _ = desk()
    resume = c.on_message(said("/resume", username="")).control
    assert resume is not None and resume.command == "resume" and resume.issued_by == "telegram:7@1001"


def test_a_control_is_stamped_when_the_operator_sent_it() -> None:
    """So a /resume read from Telegram's backlog after an outage is refused as too old."""
    c, _ = desk()
    sent = T0 - 3600 * SECOND_NS
    m = ChatMessage(chat_id=ALLOWED, user_id=ALICE, username="alice", text="/resume", sent_ns=sent)
    resume = c.on_message(m).control
    assert resume is not None and resume.ts_event == sent and resume.ts_init == T0


def test_mode_answers_or_sets_and_is_validated() -> None:
    c, _ = desk()
    assert c.on_message(said("/mode")).reply == "no risk state heard yet"
    c.on_risk_state(risk_state("DEGRADED", mode_reason="feed stale: IBM"))
    assert c.on_message(said("/mode")).reply == "mode DEGRADED: feed stale: IBM (as of 10:00:00 ET)"
    set_mode = c.on_message(said("/mode observe")).control
    assert set_mode is not None and set_mode.command == "set_mode" and set_mode.args == {"mode": "OBSERVE"}
    refused = c.on_message(said("/mode EMERGENCY"))
    assert refused.control is None and "mode must be one of LIVE, DEGRADED, OBSERVE" in refused.reply
    assert c.on_message(said("/mode LIVE now")).control is None


def test_status_and_pnl_from_the_last_risk_state() -> None:
    c, clock = desk()
    c.on_risk_state(
        risk_state(
            realized_pnl=150.0,
            day_realized_start=100.0,
            unrealized_pnl=-12.345,
            day_peak_pnl=61.0,
            gross_exposure=10001.0,
            net_exposure=10001.0,
            open_orders=2,
            day_trades=1,
        )
    )
    assert c.on_message(said("/status")).reply == (
        "mode LIVE (as of 10:00:00 ET)\n"
        "day P&L +37.66 (realized +50.00, unrealized -12.35)\n"
        "exposure gross 10,001, net +10,001; 2 open order(s); 1 day trade(s)"
    )
    clock.advance(24 * 3600 * SECOND_NS)  # a day later the date is said too
    assert c.on_message(said("/pnl")).reply == (
        "day P&L +37.66 (realized +50.00, unrealized -12.35); day peak +61.00 (as of 2013-10-08 10:00 ET)"
    )


def test_positions_from_the_last_snapshot() -> None:
    c, _ = desk()
    assert c.on_message(said("/positions")).reply == "no position snapshot heard yet"
    ibm = Position(
        symbol="IBM", quantity=100, avg_price=100.01, mark=100.0, realized_pnl=0, unrealized_pnl=-1
    )
    bac = Position(symbol="BAC", quantity=0, avg_price=0, mark=14.0, realized_pnl=3, unrealized_pnl=0)
    snapshot = PositionSnapshot(
        ts_event=T0, ts_init=T0, account="DU1", seq=1, positions=[ibm, bac], realized_pnl=3, unrealized_pnl=-1
    )
    c.on_positions(snapshot)
    assert c.on_message(said("/positions")).reply == (
        "positions as of 10:00:00 ET:\n"
        "IBM +100 @ 100.01, mark 100.00, unrealized -1.00\n"
        "total: realized +3.00, unrealized -1.00"
    )


def test_orders_keeps_the_open_ones_only() -> None:
    c, _ = desk()
    assert c.on_message(said("/orders")).reply == "no open orders"
    c.on_order(order("c-1", "SUBMITTED", 2, side="BUY", quantity=1, order_type="LMT", limit_price=90.0))
    c.on_order(order("c-1", "PENDING_SUBMIT", 1))  # late and older: ignored
    c.on_order(order("c-2", "SUBMITTED", 3, side="SELL", quantity=5))
    c.on_order(order("c-2", "FILLED", 4, side="SELL", quantity=5, filled_quantity=5))
    assert c.on_message(said("/orders")).reply == "1 open order(s):\nIBM BUY 1 LMT @ 90.00 SUBMITTED (c-1)"
    c.on_order(order("c-1", "CANCELLED", 5))
    assert c.on_message(said("/orders")).reply == "no open orders"
    c.on_risk_state(risk_state(open_orders=3))  # placed before this service heard their events
    assert "risk counts 3 open order(s)" in c.on_message(said("/orders")).reply


def test_mute_a_key_for_minutes_and_lift_it() -> None:
    c, _ = desk()
    r = c.on_message(said("/mute drift:60m 30"))
    assert r.mute == Mute("drift:60m", T0 + 30 * 60 * SECOND_NS)
    assert r.reply == "drift:60m muted for 30 min, until 10:30:00 ET; critical alerts still go out"
    spaced = c.on_message(said("/mute fastlane:model 5m quarantined 5")).mute
    assert spaced is not None and spaced.key == "fastlane:model 5m quarantined"
    lifted = c.on_message(said("/mute drift:60m 0"))
    assert lifted.mute == Mute("drift:60m", T0) and "no longer muted" in lifted.reply
    for bad in (
        "/mute",
        "/mute drift:60m",
        "/mute drift:60m soon",
        "/mute k -1",
        "/mute k 99999",
        "/mute k nan",
    ):
        refused = c.on_message(said(bad))
        assert refused.mute is None and refused.reply.startswith("usage: /mute KEY MINUTES"), bad


def test_unknown_commands_and_help_get_the_help_text() -> None:
    c, _ = desk()
    assert c.on_message(said("/help")).reply == HELP
    unknown = c.on_message(said("/flatten"))
    assert unknown.reply == f"unknown command /flatten\n{HELP}" and unknown.control is None
    assert c.stats == {"commands_obeyed": 1, "commands_unknown": 1}


def test_the_answer_to_a_command_says_what_each_responder_did_or_that_it_was_silent() -> None:
    c, _ = desk()
    c.on_message(said("/kill"))
    kill = c.on_message(said("/kill confirm")).control
    assert kill is not None
    acks: dict[str, ControlAck] = {
        "execution": ack_of(
            kill, "execution", T0, True, "killed: new approvals refused; 1 open order(s) cancelled"
        )
    }
    assert acks_reply(kill, acks, 10) == (
        "kill by telegram:alice@1001:\n"
        "risk: no answer within 10 s (not running?)\n"
        "execution: done: killed: new approvals refused; 1 open order(s) cancelled"
    )
    acks["risk"] = ack_of(kill, "risk", T0, False, "mode stays EMERGENCY")
    assert "risk: REFUSED: mode stays EMERGENCY" in acks_reply(kill, acks, 10)

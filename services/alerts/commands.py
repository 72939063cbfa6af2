"""Operator commands from Telegram, with no I/O: what to answer, publish, mute or audit.

Only the chats of ``alerts.telegram.chat_ids`` are obeyed; a command from any other chat is
refused (a short reply) and audited (the runtime raises an alert naming the chat and the user).
Messages that are not commands are ignored: a group chat's conversation is none of our business.

- ``/status``, ``/positions``, ``/pnl``, ``/orders``, ``/mode``: answered from the last risk state,
  position snapshot and order events the runtime feeds in (``on_risk_state`` and the others);
- ``/mode LIVE|DEGRADED|OBSERVE``: ``ctl.set_mode``; ``/resume``: ``ctl.resume``;
- ``/kill`` (or ``/kill flatten``) asks for confirmation; ``/kill confirm`` from the same user in
  the same chat within ``confirm_window_s`` sends ``ctl.kill``. A kill cannot be taken back by a
  resume until someone looks, so a stray tap must not send it;
- ``/mute KEY MINUTES``: the alerts of that dedupe key are acknowledged without a message for that
  long (``/mute KEY 0`` lifts it); critical alerts are never muted.

Each Control carries the operator's identity (``telegram:USER@CHAT``) and is stamped with when
the operator sent it, so the receivers' age check (``proto.control.refusal``) turns down a stale
``/resume`` or ``/mode LIVE`` read from Telegram's backlog after an outage.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from libs.common.clock import Clock
from libs.common.ids import new_id
from libs.common.markettime import ny_datetime
from proto.control import RESPONDERS, Command, Control, ControlAck, control_arg_problems
from proto.execution import TERMINAL_STATUSES, OrderEvent, PositionSnapshot
from proto.orders import RiskState
from proto.units import SECOND_NS

CONFIRM_WINDOW_S = 60.0
MAX_MUTE_MINUTES = 24 * 60  # a day: a longer silence should be a configuration change
MAX_ORDER_LINES = 20  # Telegram messages are read on phones
HELP = "\n".join(
    (
        "commands:",
        "/status - risk mode, P&L, exposure",
        "/positions - positions and their P&L",
        "/pnl - today's P&L",
        "/orders - open orders",
        "/mode [LIVE|DEGRADED|OBSERVE] - the risk mode, or set it",
        "/kill [flatten] - stop trading, cancel every open order (asks to confirm)",
        "/resume - leave EMERGENCY (to OBSERVE) and accept approvals again",
        "/mute KEY MINUTES - silence one alert key (0 lifts it; critical always goes out)",
    )
)


@dataclass(frozen=True)
class ChatMessage:
    """A text message as Telegram delivered it."""

    chat_id: int
    user_id: int
    username: str
    text: str
    sent_ns: int = 0  # when the operator sent it (0: unknown, taken as now)

    @property
    def operator(self) -> str:
        return f"telegram:{self.username or self.user_id}@{self.chat_id}"


@dataclass(frozen=True)
class Mute:
    key: str
    until_ns: int  # a time already past lifts the key's mute


@dataclass(frozen=True)
class Reaction:
    """What to do about one message; an empty one means: nothing at all."""

    reply: str = ""
    control: Control | None = None  # to publish; the reply is then what its responders said
    mute: Mute | None = None
    refused: str = ""  # why a command was refused, to audit ("" when obeyed or ignored)
    command: str = ""  # the command as typed ("/kill"), for logs and audits


@dataclass(frozen=True)
class _PendingKill:
    flatten: bool
    deadline_ns: int


class OperatorCommands:
    def __init__(
        self,
        allowed_chats: Iterable[int],
        clock: Clock,
        confirm_window_s: float = CONFIRM_WINDOW_S,
        new_command_id: Callable[[], str] = lambda: f"tg-{new_id()}",
    ) -> None:
        self.allowed_chats = frozenset(allowed_chats)
        self.clock = clock
        self.confirm_window_ns = int(confirm_window_s * SECOND_NS)
        self.new_command_id = new_command_id
        self.stats: collections.Counter[str] = collections.Counter()
        self.risk_state: RiskState | None = None
        self.positions: PositionSnapshot | None = None
        self.open_orders: dict[str, OrderEvent] = {}  # client order id -> its latest event
        self._pending_kills: dict[tuple[int, int], _PendingKill] = {}  # (chat, user) -> the request

    # -- what the fleet says ----------------------------------------------------------------------
    def on_risk_state(self, state: RiskState) -> None:
        self.risk_state = state

    def on_positions(self, snapshot: PositionSnapshot) -> None:
        self.positions = snapshot

    def on_order(self, order: OrderEvent) -> None:
        known = self.open_orders.get(order.client_order_id)
        if known is not None and known.seq > order.seq:
            return  # an older event arriving late
        if order.status in TERMINAL_STATUSES:
            self.open_orders.pop(order.client_order_id, None)
        else:
            self.open_orders[order.client_order_id] = order

    # -- what the operator says -------------------------------------------------------------------
    def on_message(self, m: ChatMessage) -> Reaction:
        words = m.text.split()
        if not words or not words[0].startswith("/"):
            return Reaction()
        command = words[0].split("@", 1)[0].lower()  # "/kill@tradefleet_bot" in groups
        if m.chat_id not in self.allowed_chats:
            self.stats["commands_refused"] += 1
            return Reaction(
                reply="This chat is not allowed to command tradefleet; the attempt was reported.",
                refused=f"chat {m.chat_id} is not allow-listed",
                command=command,
            )
        reaction = self._obey(command, words[1:], m)
        self.stats["commands_obeyed" if reaction.command else "commands_unknown"] += 1
        return reaction

    def _obey(self, command: str, args: list[str], m: ChatMessage) -> Reaction:
        match command:
            case "/status":
                return Reaction(reply=self.status_text(), command=command)
            case "/positions":
                return Reaction(reply=self.positions_text(), command=command)
            case "/pnl":
                return Reaction(reply=self.pnl_text(), command=command)
            case "/orders":
                return Reaction(reply=self.orders_text(), command=command)
            case "/mode":
                return self._mode(args, m)
            case "/kill":
                return self._kill(args, m)
            case "/resume":
                return self._control("resume", {}, m, command)
            case "/mute":
                return self._mute(args)
            case "/help" | "/start":
                return Reaction(reply=HELP, command=command)
        return Reaction(reply=f"unknown command {command}\n{HELP}")

    def _mode(self, args: list[str], m: ChatMessage) -> Reaction:
        if not args:
            return Reaction(reply=self.mode_text(), command="/mode")
        mode = args[0].upper()
        if problems := control_arg_problems("set_mode", {"mode": mode}) + _extra(args[1:]):
            return Reaction(reply=f"/mode: {'; '.join(problems)}", command="/mode")
        return self._control("set_mode", {"mode": mode}, m, "/mode")

    def _kill(self, args: list[str], m: ChatMessage) -> Reaction:
        who = (m.chat_id, m.user_id)
        now = self.clock.now_ns()
        word = args[0].lower() if args else ""
        if word == "confirm" and not args[1:]:
            pending = self._pending_kills.pop(who, None)
            if pending is None:
                return Reaction(reply="no kill of yours to confirm: send /kill first", command="/kill")
            if now > pending.deadline_ns:
                return Reaction(reply="that kill request expired: send /kill again", command="/kill")
            return self._control("kill", {"flatten": "true"} if pending.flatten else {}, m, "/kill")
        if word not in ("", "flatten") or args[1:]:
            return Reaction(reply="/kill takes only 'flatten' (or 'confirm')", command="/kill")
        flatten = word == "flatten"
        self._pending_kills[who] = _PendingKill(flatten, now + self.confirm_window_ns)
        what = (
            "cancels every open order and flattens every position" if flatten else "cancels every open order"
        )
        seconds = round(self.confirm_window_ns / SECOND_NS)
        return Reaction(
            reply=(
                f"/kill puts risk in EMERGENCY (no new entries) and {what}.\n"
                f"Send /kill confirm within {seconds} s to go ahead."
            ),
            command="/kill",
        )

    def _mute(self, args: list[str]) -> Reaction:
        usage = "usage: /mute KEY MINUTES (0 lifts the mute)"
        if len(args) < 2:
            return Reaction(reply=usage, command="/mute")
        key, minutes = " ".join(args[:-1]), _number(args[-1])
        if minutes is None or not 0 <= minutes <= MAX_MUTE_MINUTES:
            return Reaction(reply=f"{usage}; MINUTES from 0 to {MAX_MUTE_MINUTES}", command="/mute")
        until = self.clock.now_ns() + int(minutes * 60 * SECOND_NS)
        if not minutes:
            return Reaction(reply=f"{key} is no longer muted", mute=Mute(key, until), command="/mute")
        return Reaction(
            reply=f"{key} muted for {minutes:g} min, until {self._when(until)}; critical alerts still go out",
            mute=Mute(key, until),
            command="/mute",
        )

    def _control(self, command: Command, args: dict[str, str], m: ChatMessage, typed: str) -> Reaction:
        now = self.clock.now_ns()
        control = Control(
            ts_event=m.sent_ns or now,
            ts_init=now,
            command_id=self.new_command_id(),
            command=command,
            issued_by=m.operator,
            args=args,
        )
        # No reply of its own: the runtime answers with what the services did (acks_reply).
        return Reaction(control=control, command=typed)

    # -- answers ------------------------------------------------------------------------------
    def mode_text(self) -> str:
        s = self.risk_state
        if s is None:
            return "no risk state heard yet"
        reason = f": {s.mode_reason}" if s.mode_reason else ""
        return f"mode {s.mode}{reason} (as of {self._when(s.ts_event)})"

    def status_text(self) -> str:
        s = self.risk_state
        if s is None:
            return "no risk state heard yet"
        return "\n".join(
            (
                self.mode_text(),
                self._pnl_line(s),
                f"exposure gross {s.gross_exposure:,.0f}, net {s.net_exposure:+,.0f}; "
                f"{s.open_orders} open order(s); {s.day_trades} day trade(s)",
            )
        )

    def pnl_text(self) -> str:
        s = self.risk_state
        if s is None:
            return "no risk state heard yet"
        return f"{self._pnl_line(s)}; day peak {s.day_peak_pnl:+,.2f} (as of {self._when(s.ts_event)})"

    def positions_text(self) -> str:
        p = self.positions
        if p is None:
            return "no position snapshot heard yet"
        held = [x for x in p.positions if x.quantity]
        lines = [
            f"positions as of {self._when(p.ts_event)}:" if held else f"flat (as of {self._when(p.ts_event)})"
        ]
        lines += [
            f"{x.symbol} {x.quantity:+g} @ {x.avg_price:,.2f}, mark {x.mark:,.2f}, "
            f"unrealized {x.unrealized_pnl:+,.2f}"
            for x in sorted(held, key=lambda x: x.symbol)
        ]
        lines.append(f"total: realized {p.realized_pnl:+,.2f}, unrealized {p.unrealized_pnl:+,.2f}")
        return "\n".join(lines)

    def orders_text(self) -> str:
        orders = sorted(self.open_orders.values(), key=lambda o: o.ts_event)
        if not orders:
            counted = self.risk_state.open_orders if self.risk_state else 0
            if counted:  # placed before this service started: their events are not in hand
                return f"risk counts {counted} open order(s), placed before the alerts service started"
            return "no open orders"
        lines = [f"{len(orders)} open order(s):"]
        lines += [_order_line(o) for o in orders[:MAX_ORDER_LINES]]
        if len(orders) > MAX_ORDER_LINES:
            lines.append(f"... and {len(orders) - MAX_ORDER_LINES} more")
        return "\n".join(lines)

    def _pnl_line(self, s: RiskState) -> str:
        realized = s.realized_pnl - s.day_realized_start
        day = realized + s.unrealized_pnl
        return f"day P&L {day:+,.2f} (realized {realized:+,.2f}, unrealized {s.unrealized_pnl:+,.2f})"

    def _when(self, ts_ns: int) -> str:
        """New York time; with the date when it is not today's."""
        at = ny_datetime(ts_ns)
        today = ny_datetime(self.clock.now_ns()).date()
        return at.strftime("%H:%M:%S ET" if at.date() == today else "%Y-%m-%d %H:%M ET")


def acks_reply(control: Control, acks: Mapping[str, ControlAck], wait_s: float) -> str:
    """What the services did about a command, one line each; silence said as silence."""
    lines = [f"{control.command} by {control.issued_by}:"]
    for service in RESPONDERS[control.command]:
        ack = acks.get(service)
        if ack is None:
            lines.append(f"{service}: no answer within {wait_s:g} s (not running?)")
        else:
            verdict = "done" if ack.accepted else "REFUSED"
            lines.append(f"{service}: {verdict}: {ack.summary}")
    return "\n".join(lines)


def _order_line(o: OrderEvent) -> str:
    price = f" @ {o.limit_price:,.2f}" if o.limit_price else ""
    filled = f", filled {o.filled_quantity:g}" if o.filled_quantity else ""
    kind = o.order_type or "MKT"
    return f"{o.symbol} {o.side} {o.quantity:g} {kind}{price} {o.status}{filled} ({o.client_order_id})"


def _extra(args: list[str]) -> list[str]:
    return [f"unexpected {' '.join(args)!r}"] if args else []


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

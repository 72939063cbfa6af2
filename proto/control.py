"""Operator commands (API, Telegram, panic file) to the fleet."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Event, Identifier

Command = Literal[
    "kill",
    "resume",
    "flatten",
    "set_mode",
    "reload",
    "cancel_all",
    # one order: args client_order_id; replace also quantity (only down) and/or limit_price
    "cancel",
    "replace",
]


class Control(DurableEvent, frozen=True, kw_only=True):
    command_id: Identifier
    command: Command
    issued_by: str
    args: dict[str, str] = {}

    def dedupe_key(self) -> str:
        return f"ctl:{self.command_id}"


class SyncProbe(Event, frozen=True, kw_only=True):
    """A lockstep replay asks a service whether it is quiet (request/reply on sync.SERVICE)."""

    round: int


class SyncReply(Event, frozen=True, kw_only=True):
    """Quiet: nothing in hand, nothing waiting for it in NATS, its own sends at the server.
    ``handled`` and ``sent`` only grow: two quiet rounds with equal sums mean nothing moved."""

    service: str
    quiet: bool
    handled: int
    sent: int
    detail: str = ""

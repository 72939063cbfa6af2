"""Operator commands (API, Telegram, panic file) to the fleet."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Identifier

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

"""Waiting for the answers (ControlAck on ack.*) to a published command: the control API and the
Telegram desk each listen to ack.* from their start and file every ack under its command id."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from proto.control import ControlAck


@dataclass
class Awaited:
    """One command's answers as they come in; ``all_in`` once every expected responder spoke."""

    expected: frozenset[str]
    acks: dict[str, ControlAck] = field(default_factory=dict)
    all_in: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, ack: ControlAck) -> None:
        self.acks[ack.service] = ack
        if self.expected <= set(self.acks):
            self.all_in.set()

"""An aiosmtpd handler that keeps every message it accepts: a real SMTP server for the email sink."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

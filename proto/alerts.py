"""Alerts for people, and dead letters for events a service could not take."""

from __future__ import annotations

from typing import Literal

from proto.base import DurableEvent, Identifier

Severity = Literal["info", "warning", "critical"]


class Alert(DurableEvent, frozen=True, kw_only=True):
    alert_id: Identifier
    severity: Severity
    source: str
    title: str
    body: str = ""
    dedupe: str = ""
    labels: dict[str, str] = {}

    def dedupe_key(self) -> str:
        return f"alert:{self.alert_id}"


class DeadLetter(DurableEvent, frozen=True, kw_only=True):
    """A message a service refused, kept whole so nothing is lost and it can be replayed."""

    service: str
    subject: str
    reason: str
    error: str
    payload: bytes
    digest: str

    def dedupe_key(self) -> str:
        return f"dlq:{self.service}:{self.digest}"

"""What the alerts service hands a sink, and how a sink says it failed.

A sink delivers one ``Message`` (one alert, or a burst of the same alert folded into one with its
count) to people: Telegram, email. It raises ``SinkError`` when trying again later may work (the
server is down, a timeout, a 5xx, a rate limit) and ``PermanentSinkError`` when it cannot (a bad
token, an unknown chat, credentials refused): the service retries the first with backoff and gives
up at once on the second, counting and saying so on the other sinks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Protocol

from libs.common.markettime import ny_text

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class SinkError(Exception):
    """Delivery failed this time; it may work later."""


class PermanentSinkError(SinkError):
    """Delivery cannot work as configured: retrying is pointless."""


@dataclass(frozen=True)
class Message:
    key: str  # the dedupe key: alerts with the same one fold into one message
    severity: str
    source: str
    title: str
    body: str = ""
    count: int = 1  # alerts this message stands for
    window_s: float = 0.0  # ...seen within this many seconds
    first_ns: int = 0
    last_ns: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def headline(self) -> str:
        """[CRITICAL] fastlane: model 60m quarantined (x37 in 5 min)."""
        repeat = f" (x{self.count} in {_span(self.window_s)})" if self.count > 1 else ""
        return f"[{self.severity.upper()}] {self.source}: {self.title}{repeat}"

    def when(self) -> str:
        if not self.last_ns:
            return ""
        return ny_text(self.last_ns, "%Y-%m-%d %H:%M:%S ET")

    def text(self) -> str:
        """Plain text: the headline, the body, the labels, when."""
        lines = [self.headline()]
        if self.body:
            lines.append(self.body)
        lines += [f"{k}: {v}" for k, v in sorted(self.labels.items())]
        if self.when():
            lines.append(f"at {self.when()}")
        return "\n".join(lines)

    def html(self) -> str:
        """The same as HTML (escaped: alert text comes from data)."""
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
            for k, v in sorted(self.labels.items())
        )
        parts = [f"<p><b>{html.escape(self.headline())}</b></p>"]
        if self.body:
            parts.append(f"<p>{html.escape(self.body)}</p>")
        if rows:
            parts.append(f"<table>{rows}</table>")
        if self.when():
            parts.append(f"<p>at {html.escape(self.when())}</p>")
        return "".join(parts)


def _span(seconds: float) -> str:
    return f"{round(seconds / 60)} min" if seconds >= 60 else f"{round(seconds)} s"


class Sink(Protocol):
    name: str

    async def send(self, message: Message) -> None:
        """Deliver or raise SinkError / PermanentSinkError."""

    async def close(self) -> None: ...

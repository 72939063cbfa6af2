"""The alerts service's decisions, with no I/O: which sinks an alert goes to, and how repeats fold.

Routing: a sink takes an alert at or above its severity floor (``alerts.min_severity``); a
critical alert goes to every sink whatever the floors say.

Folding, per dedupe key (the alert's ``dedupe``, else source and title):
- the first alert of a key opens a window (``alerts.dedupe_window_s``) and is held a moment
  (``burst_s``) so that a burst of the same alert goes out as one message with its count;
  a critical one goes out at once;
- repeats later in the window are counted and go out as one message when the window closes
  ("x37 in 5 min"); the next alert after that opens a new window.
Every alert is handed back with the message that carries it (``Outgoing.refs``), so the runtime
acknowledges it only once that message has been delivered or definitively failed on every sink.

Muting (an operator's ``/mute KEY MINUTES``): a muted key's alerts are acknowledged without a
message and counted ("muted") until the mute ends. A critical alert is never muted: what cannot
wait must not be silenced by a mute set for its noisier cousins.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.common.clock import Clock
from libs.common.config import AlertsSettings
from proto.alerts import Alert
from proto.units import SECOND_NS
from services.alerts.sinks import SEVERITY_RANK, Message

BURST_S = 2.0  # how long the first alert of a key waits for identical ones


@dataclass
class Outgoing:
    """One message for some sinks, and the alerts (their delivery handles) it stands for."""

    message: Message
    sinks: tuple[str, ...]
    refs: list[Any] = field(default_factory=list)


@dataclass
class _Fold:
    key: str
    first: Alert
    window_end: int
    flush_at: int
    severity: str = "info"
    count: int = 0  # alerts held, not yet in a message
    since: int = 0  # when the first held alert came (the service's clock)
    first_event_ns: int = 0  # when the held alerts happened (their ts_event: market time in a replay)
    last_event_ns: int = 0
    body: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    refs: list[Any] = field(default_factory=list)

    def hold(self, alert: Alert, ref: Any, now: int) -> None:
        if not self.count:
            self.since, self.first_event_ns = now, alert.ts_event
        self.count += 1
        self.last_event_ns = alert.ts_event
        if SEVERITY_RANK[alert.severity] > SEVERITY_RANK[self.severity]:
            self.severity = alert.severity
        self.body, self.labels = alert.body, dict(alert.labels)  # the latest says most
        self.refs.append(ref)


class AlertsCore:
    def __init__(
        self, cfg: AlertsSettings, clock: Clock, sinks: Sequence[str], burst_s: float = BURST_S
    ) -> None:
        self.cfg = cfg
        self.clock = clock
        self.sinks = tuple(sinks)
        self.window_ns = int(cfg.dedupe_window_s * SECOND_NS)
        self.burst_ns = int(burst_s * SECOND_NS)
        self.folds: dict[str, _Fold] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self.produced: collections.Counter[str] = collections.Counter()  # "source/severity"
        self.muted_until: dict[str, int] = {}  # dedupe key -> when its mute ends (the clock's ns)

    def mute(self, key: str, until_ns: int) -> None:
        """Silence ``key`` until ``until_ns``; a time already past lifts its mute."""
        if until_ns > self.clock.now_ns():
            self.muted_until[key] = until_ns
        else:
            self.muted_until.pop(key, None)

    def mutes(self) -> dict[str, int]:
        """The mutes still running: key -> when each ends."""
        now = self.clock.now_ns()
        for key in [k for k, until in self.muted_until.items() if until <= now]:
            del self.muted_until[key]
        return dict(self.muted_until)

    def _muted(self, key: str, severity: str) -> bool:
        return severity != "critical" and key in self.mutes()

    def routes(self, severity: str) -> tuple[str, ...]:
        """The sinks that take an alert of this severity (critical: all of them)."""
        if severity == "critical":
            return self.sinks
        rank = SEVERITY_RANK[severity]
        return tuple(s for s in self.sinks if rank >= SEVERITY_RANK[self.cfg.min_severity.get(s, "warning")])

    def take(self, alert: Alert, ref: Any) -> list[Outgoing]:
        """An alert in; the messages now due out (this alert's, or others' whose time came)."""
        now = self.clock.now_ns()
        self.produced[f"{alert.source}/{alert.severity}"] += 1
        if not self.routes(alert.severity):
            self.stats["below_floor"] += 1
            return [Outgoing(_message_of(alert), (), [ref]), *self.due()]
        key = alert_key(alert)
        if self._muted(key, alert.severity):
            self.stats["muted"] += 1
            return [Outgoing(_message_of(alert), (), [ref]), *self.due()]
        fold = self.folds.get(key)
        if fold is None or now >= fold.window_end:
            wait = 0 if alert.severity == "critical" else self.burst_ns
            fold = self.folds[key] = _Fold(key, alert, now + self.window_ns, now + wait)
        elif fold.count:
            self.stats["folded"] += 1
        if alert.severity == "critical":
            fold.flush_at = now  # critical always goes out at once, a repeat in the window too
        fold.hold(alert, ref, now)
        return self.due()

    def due(self) -> list[Outgoing]:
        """The held messages whose time has come (burst over, or window closed)."""
        now = self.clock.now_ns()
        out = []
        for key, fold in list(self.folds.items()):
            if fold.count and now >= fold.flush_at:
                out.append(self._flush(fold, now))
                fold.flush_at = fold.window_end  # repeats from now on wait for the window's end
            elif not fold.count and now >= fold.window_end:
                del self.folds[key]
        return out

    def flush_all(self) -> list[Outgoing]:
        """Everything held, now (the service is stopping: nothing is kept back)."""
        now = self.clock.now_ns()
        out = [self._flush(f, now) for f in self.folds.values() if f.count]
        self.folds.clear()
        return out

    def _flush(self, fold: _Fold, now: int) -> Outgoing:
        a = fold.first
        message = Message(
            key=fold.key,
            severity=fold.severity,
            source=a.source,
            title=a.title,
            body=fold.body,
            count=fold.count,
            window_s=round((now - fold.since) / SECOND_NS, 1),  # "x37 in 5 min": the span it folds
            first_ns=fold.first_event_ns,
            last_ns=fold.last_event_ns,
            labels=fold.labels,
        )
        outgoing = Outgoing(message, self.routes(fold.severity), fold.refs)
        fold.count, fold.refs = 0, []
        self.stats["messages"] += 1
        return outgoing


def alert_key(alert: Alert) -> str:
    """What folds and mutes an alert: its dedupe key, else its source and title."""
    return alert.dedupe or f"{alert.source}:{alert.title}"


def _message_of(alert: Alert) -> Message:
    return Message(
        key=alert.dedupe,
        severity=alert.severity,
        source=alert.source,
        title=alert.title,
        body=alert.body,
        first_ns=alert.ts_event,
        last_ns=alert.ts_event,
        labels=dict(alert.labels),
    )

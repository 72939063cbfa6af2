"""The broker link's health as events: what the risk gate trades on, and what people are told.

Pure: the broker's own summary (connected? reconciliations done? did IB's positions match ours at
the last one?) and the time in, events out, only on a change:
- the link lost: ``BrokerStatus(disconnected)`` at once (the risk gate degrades to exits only);
  an alert only once the outage outlasts what is expected of it (IB's nightly reset windows, or
  ``ib.max_disconnect_s`` outside them), so the nightly reset pages nobody;
- the link back and reconciled: ``BrokerStatus(reconciled)``, and a recovered alert if people were
  told of the outage;
- a reconciliation whose positions differ from ours: ``BrokerStatus(mismatch)`` (EMERGENCY at the
  gate until an operator resumes) and a critical alert naming both books.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.common.ib.windows import Window, expected_until
from proto.alerts import Alert, Severity
from proto.base import Event
from proto.execution import BrokerState, BrokerStatus
from proto.units import SECOND_NS


@dataclass(frozen=True)
class BrokerHealth:
    connected: bool
    reconciliations: int
    positions_match: bool | None  # at the last reconciliation; None: not compared
    ours: dict[str, float] | None = None
    theirs: dict[str, float] | None = None

    @classmethod
    def of(cls, summary: dict[str, Any]) -> BrokerHealth:
        """From IbBroker.summary()."""
        return cls(
            connected=bool(summary.get("connected")),
            reconciliations=int(summary.get("reconciliations") or 0),
            positions_match=summary.get("positions_match"),
            ours=summary.get("positions_ours"),
            theirs=summary.get("positions_at_ib"),
        )


class BrokerWatch:
    def __init__(self, broker: str, windows: list[Window], max_disconnect_s: float) -> None:
        self.broker = broker
        self.windows = windows
        self.max_disconnect_s = max_disconnect_s
        self.seq = 0
        self.last: BrokerHealth | None = None
        self.state: BrokerState | None = None
        self.down_since_s: float | None = None
        self.paged = False  # people were told of the current outage

    def observe(self, h: BrokerHealth, now_s: float) -> list[Event]:
        before, self.last = self.last, h
        out: list[Event] = []
        if not h.connected:
            if self.state != "disconnected" and (before is not None or self.state is not None):
                self.down_since_s = now_s
                out.append(
                    self._status("disconnected", "the broker link is down: nothing can be sent", now_s)
                )
            out += self._page_if_overdue(now_s)
            return out
        done_one = before is None or h.reconciliations > before.reconciliations
        if not done_one or h.reconciliations == 0:
            return out
        if h.positions_match is False:
            if self.state != "mismatch":
                detail = f"positions ours {h.ours} vs the broker's {h.theirs}"
                out.append(self._status("mismatch", detail, now_s))
                out.append(self._alert("critical", "reconciliation mismatch: " + detail, "mismatch", now_s))
            return out
        if self.state != "reconciled":
            out.append(self._status("reconciled", "connected and reconciled", now_s))
            if self.paged:
                down = now_s - (self.down_since_s or now_s)
                out.append(
                    self._alert("warning", f"broker link back after {down:.0f} s, reconciled", "back", now_s)
                )
            self.paged, self.down_since_s = False, None
        return out

    def _page_if_overdue(self, now_s: float) -> list[Event]:
        if self.paged or self.down_since_s is None:
            return []
        if now_s <= expected_until(self.down_since_s, self.windows, self.max_disconnect_s):
            return []
        self.paged = True
        down = now_s - self.down_since_s
        return [
            self._alert("critical", f"broker link lost for {down:.0f} s: orders cannot go out", "lost", now_s)
        ]

    def _status(self, state: BrokerState, detail: str, now_s: float) -> BrokerStatus:
        self.state = state
        self.seq += 1
        ts = int(now_s * SECOND_NS)
        return BrokerStatus(
            ts_event=ts, ts_init=ts, broker=self.broker, state=state, seq=self.seq, detail=detail
        )

    def _alert(self, severity: Severity, title: str, kind: str, now_s: float) -> Alert:
        ts = int(now_s * SECOND_NS)
        return Alert(
            ts_event=ts,
            ts_init=ts,
            alert_id=f"{self.broker}-{kind}-{self.seq}-{ts}",
            severity=severity,
            source="execution",
            title=title,
            dedupe=f"broker-link:{kind}",
            labels={"broker": self.broker},
        )

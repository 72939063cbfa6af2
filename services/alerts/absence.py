"""Absence as an alert: a service that stops heart-beating (hb.SERVICE) without saying it stops.

Pure: heartbeats and the clock in, alerts out. A service is watched from its first heartbeat on
(nothing is expected of a service this fleet does not run); silence longer than the limit is a
critical alert, once; its next heartbeat (the same process, or a restarted one) is a recovered
alert. A clean stop says so in its last heartbeat, and the silence after it is not an absence.
"""

from __future__ import annotations

from dataclasses import dataclass

from libs.common.clock import Clock
from libs.common.markettime import ny_text
from proto.alerts import Alert
from proto.control import Heartbeat
from proto.units import SECOND_NS


@dataclass
class _Seen:
    at_ns: int  # when its last heartbeat arrived (this service's clock)
    instance: int
    absent_since: int = 0  # when it was declared absent (0: it is not)


class AbsenceWatch:
    def __init__(self, limit_s: float, clock: Clock) -> None:
        self.limit_ns = int(limit_s * SECOND_NS)
        self.clock = clock
        self.seen: dict[str, _Seen] = {}

    def on_heartbeat(self, hb: Heartbeat) -> list[Alert]:
        now = self.clock.now_ns()
        who = f"{hb.service}[{hb.replica}]" if hb.replica else hb.service  # each replica on its own
        before = self.seen.get(who)
        back = before is not None and before.absent_since
        if hb.stopping:
            self.seen.pop(who, None)
        else:
            self.seen[who] = _Seen(now, hb.instance)
        if not back:
            return []
        assert before is not None
        silent_s = (now - before.at_ns) / SECOND_NS
        how = "restarted" if hb.instance != before.instance else "the same process"
        return [
            self._alert(
                "warning",
                f"recovered:{who}",
                f"{who} is back after {silent_s:.0f} s of silence ({how})",
                who,
                now,
                {"instance": str(hb.instance), "silent_s": f"{silent_s:.1f}"},
            )
        ]

    def check(self) -> list[Alert]:
        """The services silent past the limit, each declared once."""
        now = self.clock.now_ns()
        out = []
        for service, seen in self.seen.items():
            if not seen.absent_since and now - seen.at_ns > self.limit_ns:
                seen.absent_since = now
                last = ny_text(seen.at_ns, "%H:%M:%S")
                out.append(
                    self._alert(
                        "critical",
                        f"absent:{service}",
                        f"{service} silent: no heartbeat since {last} ET",
                        service,
                        now,
                        {"instance": str(seen.instance), "limit_s": f"{self.limit_ns / SECOND_NS:g}"},
                    )
                )
        return out

    @staticmethod
    def _alert(
        severity: str, dedupe: str, title: str, service: str, now: int, labels: dict[str, str]
    ) -> Alert:
        return Alert(
            ts_event=now,
            ts_init=now,
            alert_id=f"{dedupe}:{now}",
            severity=severity,  # type: ignore[arg-type]
            source="alerts",
            title=title,
            dedupe=dedupe,
            labels={"service": service, **labels},
        )

"""Is the fleet's work flowing? Market data, feature vectors and storage, judged from the
progress each service carries in its heartbeat (proto.control.Progress), and regime flips from
the feature vectors of one timeframe.

Pure: heartbeats, vectors and the clock in, alerts out. Each problem is declared once, with a
recovered alert when it ends:
- a subscribed symbol without a record for ``market_silence_s`` of market time while the session
  is open (the exchange calendar's; the feed's own clock, so a replay is judged in its time);
- a features service (each replica on its own) that has made no vector this session
  ``vectors_grace_s`` of wall time after the fleet's market clock passed the first bar's close
  (wall time: at full replay speed features may trail the gateway by many market minutes);
- a recorder that has not had everything it received written for ``recorder_lag_s``.
A new session day starts the market and vector checks afresh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.common.calendar import MarketCalendar, Session
from libs.common.clock import Clock
from libs.common.config import AlertsSettings
from libs.common.markettime import ny_day_ordinal, ny_text
from proto.alerts import Alert, Severity
from proto.control import Heartbeat, Progress
from proto.features import FeatureVector
from proto.units import SECOND_NS

TRENDS = {"up", "down"}  # a flip is one of these to the other (through "range" or not)


@dataclass
class _Silence:
    last_ns: int  # the symbol's latest record when it was declared silent
    since_ns: int  # when its silence began (its last record, or the open)


@dataclass
class _VectorCheck:
    due_seen_at: int = 0  # wall ns the fleet's market clock was first seen past the first bar
    declared: bool = False


@dataclass
class _Day:
    ordinal: int = -1
    session: Session | None = None
    silent: dict[str, _Silence] = field(default_factory=dict)
    vectors: dict[str, _VectorCheck] = field(default_factory=dict)


class FlowWatch:
    def __init__(
        self, cfg: AlertsSettings, calendar: MarketCalendar, first_bar_ns: int, clock: Clock
    ) -> None:
        self.silence_ns = int(cfg.market_silence_s * SECOND_NS)
        self.grace_ns = int(cfg.vectors_grace_s * SECOND_NS)
        self.lag_limit_s = cfg.recorder_lag_s
        self.calendar = calendar
        self.first_bar_ns = first_bar_ns
        self.clock = clock
        self.market_ns = 0  # the fleet's market clock: the latest market-data heartbeat's
        self.day = _Day()
        self.lagging: set[str] = set()
        self.trend: dict[str, str] = {}  # symbol -> its latest trending direction

    # -- heartbeats ---------------------------------------------------------------------------
    def on_heartbeat(self, hb: Heartbeat) -> list[Alert]:
        p = hb.progress
        if p is None or hb.stopping:
            return []
        who = f"{hb.service}[{hb.replica}]" if hb.replica else hb.service
        if p.last_record_ns:
            return self._market(who, p)
        if p.last_vector_ns >= 0:
            return self._vectors(who, p)
        if p.lag_s >= 0:
            return self._storage(who, p)
        return []

    def _today(self, market_ns: int) -> _Day:
        day = ny_day_ordinal(market_ns)
        if day != self.day.ordinal:  # a new session: every check starts again
            self.day = _Day(day, self.calendar.session(day))
        return self.day

    def _market(self, who: str, p: Progress) -> list[Alert]:
        now = p.market_ns
        self.market_ns = max(self.market_ns, now)
        day = self._today(now)
        session = day.session
        is_open = session is not None and session.open_ns <= now < session.close_ns
        out = []
        for symbol, last in sorted(p.last_record_ns.items()):
            silence = day.silent.get(symbol)
            if silence is not None and last > silence.last_ns:
                del day.silent[symbol]
                gap_s = (last - silence.since_ns) / SECOND_NS
                at = ny_text(last, "%H:%M:%S")
                title = f"market data for {symbol} is back after {gap_s:.0f} s ({at} ET)"
                key = f"recovered:md-silent:{symbol}"
                out.append(self._alert("warning", key, title, who, {"symbol": symbol}))
            elif silence is None and is_open:
                assert session is not None
                since = max(last, session.open_ns)
                if now - since > self.silence_ns:
                    day.silent[symbol] = _Silence(last, since)
                    quiet_s = (now - since) / SECOND_NS
                    title = (
                        f"no market data for {symbol} since {ny_text(since, '%H:%M:%S')} ET "
                        f"({quiet_s:.0f} s into an open session)"
                    )
                    labels = {"symbol": symbol, "silent_s": f"{quiet_s:.0f}"}
                    out.append(self._alert("warning", f"md-silent:{symbol}", title, who, labels))
        return out

    def _vectors(self, who: str, p: Progress) -> list[Alert]:
        if not self.market_ns:
            return []  # no market clock yet: nothing can be due
        day = self._today(self.market_ns)
        session = day.session
        if session is None:
            return []
        check = day.vectors.setdefault(who, _VectorCheck())
        first_close = session.open_ns + self.first_bar_ns
        if p.last_vector_ns > session.open_ns:  # it made one this session
            if check.declared:
                check.declared = False
                at = ny_text(p.last_vector_ns, "%H:%M")
                title = f"{who} makes feature vectors again (latest for {at} ET)"
                return [self._alert("warning", f"recovered:no-vectors:{who}", title, who, {})]
            return []
        if check.declared or not first_close <= self.market_ns < session.close_ns:
            return []
        now = self.clock.now_ns()
        check.due_seen_at = check.due_seen_at or now
        if now - check.due_seen_at <= self.grace_ns:
            return []
        check.declared = True
        at = ny_text(first_close, "%H:%M")
        title = f"{who} made no feature vector: the session's first bar closed at {at} ET"
        return [self._alert("warning", f"no-vectors:{who}", title, who, {})]

    def _storage(self, who: str, p: Progress) -> list[Alert]:
        if p.lag_s > self.lag_limit_s and who not in self.lagging:
            self.lagging.add(who)
            title = (
                f"{who} is {p.lag_s:.0f} s behind: {p.unwritten_rows} rows held unwritten "
                "(database down or slow?)"
            )
            labels = {"lag_s": f"{p.lag_s:.1f}", "unwritten_rows": str(p.unwritten_rows)}
            return [self._alert("warning", f"recorder-lag:{who}", title, who, labels)]
        if p.lag_s <= self.lag_limit_s / 2 and who in self.lagging:  # half: no flapping at the limit
            self.lagging.discard(who)
            title = f"{who} caught up: everything received is written"
            return [self._alert("warning", f"recovered:recorder-lag:{who}", title, who, {})]
        return []

    # -- regimes --------------------------------------------------------------------------------
    def on_vector(self, v: FeatureVector) -> list[Alert]:
        """A symbol's trend flipping from up to down or back (a "range" between does not count
        as a flip, nor does a volatility change): information for people, not a fault."""
        direction = v.regime.partition("/")[0]
        if direction not in TRENDS:
            return []
        before = self.trend.get(v.symbol)
        self.trend[v.symbol] = direction
        if before is None or before == direction:
            return []
        at = ny_text(v.ts_event, "%H:%M")
        title = f"{v.symbol} regime flip on {v.timeframe}: {before} -> {direction} ({v.regime} at {at} ET)"
        labels = {"symbol": v.symbol, "timeframe": v.timeframe, "from": before, "to": direction}
        return [self._alert("info", f"regime:{v.symbol}", title, "features", labels)]

    def _alert(self, severity: Severity, dedupe: str, title: str, who: str, labels: dict[str, str]) -> Alert:
        now = self.clock.now_ns()
        return Alert(
            ts_event=now,
            ts_init=now,
            alert_id=f"{dedupe}:{now}",
            severity=severity,
            source="alerts",
            title=title,
            dedupe=dedupe,
            labels={"service": who, **labels},
        )

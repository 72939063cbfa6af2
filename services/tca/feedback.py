"""What TCA learns from many orders: rolling cost aggregates, N-sigma slippage alerts, and the
feedback that tells the execution gateway how to work a symbol's market orders. Pure.

Cost is all-in: implementation shortfall (the unfilled part at its opportunity cost) plus
commissions, in bps of the paper notional.

The feedback is a small explore-then-exploit loop per symbol, over the two ways the gateway can
work a market order:
- MKT until ``min_samples`` market orders have been measured (the baseline);
- then LMT (a limit from the near touch, chased to the far touch) until it has as many;
- then whichever has the lower mean cost over the last ``window`` orders of each.
While LMT is used, its offset moves by ``offset_step_bps``: toward the far touch when too few
fills are passive (the limit mostly ends up chased, paying the spread late), back toward the
near touch when nearly all are (there was room to be more patient). Market orders that walk the
book (effective spread above the quoted one by ``walk_threshold_bps``) get sliced. Every number
stays inside this policy's bounds, and the gateway clamps again to its own.
"""

from __future__ import annotations

import collections
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from libs.common.config import TcaSettings
from libs.common.markettime import ny_minute_facts
from proto.alerts import Alert
from proto.base import Event
from proto.tca import TcaAggregate, TcaFeedback, TcaReport

TimeOfDay = Literal["open", "midday", "close"]
Style = Literal["MKT", "LMT"]


def time_of_day(ts_ns: int) -> TimeOfDay:
    minute = ny_minute_facts(ts_ns)[1]
    if minute < 10 * 60:
        return "open"
    return "close" if minute >= 15 * 60 + 30 else "midday"


@dataclass
class _Rolling:
    costs: collections.deque[float]
    fill_ratios: collections.deque[float]
    passive: collections.deque[float]

    @classmethod
    def of(cls, window: int) -> _Rolling:
        return cls(*(collections.deque(maxlen=window) for _ in range(3)))

    def add(self, r: TcaReport) -> None:
        self.costs.append(r.cost_bps)
        self.fill_ratios.append(r.fill_ratio)
        self.passive.append(r.passive_ratio)

    def z_score(self, cost: float, min_samples: int) -> float | None:
        if len(self.costs) < min_samples:
            return None
        std = statistics.pstdev(self.costs)
        return (cost - statistics.fmean(self.costs)) / std if std > 1e-9 else None


@dataclass
class _SymbolTactic:
    style: Style = "MKT"
    offset_bps: float = 0.0
    slice_shares: float = 0.0
    costs: dict[str, collections.deque[float]] = field(default_factory=dict)
    passive: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8))
    walk: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8))
    last_sent: tuple[str, float, float] | None = None
    quantities: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=8))


class CostBook:
    def __init__(self, policy: TcaSettings, namespace: str = "tca") -> None:
        self.policy = policy
        self.namespace = namespace  # feedback ids must differ across runs (stream dedupe)
        self.rolling: dict[tuple[str, str, TimeOfDay], _Rolling] = {}
        self.tactics: dict[str, _SymbolTactic] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self._ids = 0

    def add(self, r: TcaReport, now: int) -> list[Event]:
        """One finished order's report: its aggregate, maybe an alert, maybe new feedback."""
        if not r.fill_ratio > 0 or not math.isfinite(r.cost_bps):
            self.stats["unfilled_or_unpriced"] += 1
            return []
        out: list[Event] = []
        key = (r.symbol, r.order_type, time_of_day(r.ts_event))
        rolling = self.rolling.setdefault(key, _Rolling.of(self.policy.window))
        z = rolling.z_score(r.cost_bps, self.policy.min_samples)
        if z is not None and z > self.policy.alert_sigma:
            out.append(self._alert(r, key, rolling, z, now))
        rolling.add(r)
        out.append(self._aggregate(key, rolling, r.ts_event, now))
        if self.policy.feedback and r.intent_order_type == "MKT":
            out += self._learn(r, now)
        return out

    def aggregates(self) -> Iterable[tuple[tuple[str, str, TimeOfDay], _Rolling]]:
        return self.rolling.items()

    # -- aggregates and alerts ---------------------------------------------------------------------
    @staticmethod
    def _aggregate(key: tuple[str, str, TimeOfDay], r: _Rolling, ts: int, now: int) -> TcaAggregate:
        return TcaAggregate(
            ts_event=ts,
            ts_init=now,
            symbol=key[0],
            order_type=key[1],
            time_of_day=key[2],
            count=len(r.costs),
            mean_cost_bps=statistics.fmean(r.costs),
            std_cost_bps=statistics.pstdev(r.costs),
            mean_fill_ratio=statistics.fmean(r.fill_ratios),
            mean_passive_ratio=statistics.fmean(r.passive),
        )

    def _alert(
        self, r: TcaReport, key: tuple[str, str, TimeOfDay], rolling: _Rolling, z: float, now: int
    ) -> Alert:
        self.stats["alerts"] += 1
        mean = statistics.fmean(rolling.costs)
        symbol, order_type, tod = key
        return Alert(
            ts_event=r.ts_event,
            ts_init=now,
            alert_id=f"{self.namespace}-slippage-{r.client_order_id}",
            severity="warning",
            source="tca",
            title=f"{symbol} {order_type} cost {r.cost_bps:.1f} bps, {z:.1f} sigma above its {tod} mean",
            body=(
                f"order {r.client_order_id} ({r.side} {r.quantity:g}): cost {r.cost_bps:.2f} bps against a "
                f"rolling mean of {mean:.2f} bps over the last {len(rolling.costs)} {order_type} orders at "
                f"the {tod}; spread at arrival {r.spread_bps_at_arrival:.2f} bps, "
                f"fill ratio {r.fill_ratio:.2f}."
            ),
            dedupe=f"tca-slippage:{symbol}:{order_type}:{tod}",
            labels={"symbol": symbol, "order_type": order_type, "time_of_day": tod},
        )

    # -- feedback ---------------------------------------------------------------------------------------
    def _learn(self, r: TcaReport, now: int) -> list[Event]:
        p = self.policy
        t = self.tactics.setdefault(r.symbol, _SymbolTactic(offset_bps=p.start_offset_bps))
        t.costs.setdefault(r.order_type, collections.deque(maxlen=p.window)).append(r.cost_bps)
        t.quantities.append(r.quantity)
        if r.order_type == "LMT":
            t.passive.append(r.passive_ratio)
            if len(t.passive) >= 4:
                share = statistics.fmean(t.passive)
                if share < p.passive_low:
                    t.offset_bps = min(t.offset_bps + p.offset_step_bps, p.max_offset_bps)
                elif share > p.passive_high:
                    t.offset_bps = max(t.offset_bps - p.offset_step_bps, 0.0)
        else:
            t.walk.append(r.effective_spread_bps - r.spread_bps_at_arrival)
        mkt, lmt = (len(t.costs.get(s, ())) for s in ("MKT", "LMT"))
        if mkt < p.min_samples:
            t.style, why = "MKT", f"measuring market orders ({mkt}/{p.min_samples})"
        elif lmt < p.min_samples:
            t.style, why = "LMT", f"trying limits ({lmt}/{p.min_samples})"
        else:
            m, lm = statistics.fmean(t.costs["MKT"]), statistics.fmean(t.costs["LMT"])
            t.style = "LMT" if lm < m else "MKT"
            why = f"mean cost MKT {m:.2f} bps, LMT {lm:.2f} bps over the last {mkt}/{lmt}"
        walking = len(t.walk) >= 4 and statistics.fmean(t.walk) > p.walk_threshold_bps
        t.slice_shares = (
            max(p.min_slice_shares, math.floor(statistics.median(t.quantities) / 2)) if walking else 0.0
        )
        state = (t.style, round(t.offset_bps, 6), t.slice_shares)
        if state == t.last_sent:
            return []
        t.last_sent = state
        self._ids += 1
        self.stats["feedback"] += 1
        return [
            TcaFeedback(
                ts_event=r.ts_event,
                ts_init=now,
                feedback_id=f"{self.namespace}-{self._ids}",
                symbol=r.symbol,
                style=t.style,
                limit_offset_bps=t.offset_bps,
                chase_after_ms=p.chase_after_ms,
                slice_shares=t.slice_shares,
                reason=why
                + (
                    f"; slicing: market orders walked the book by {statistics.fmean(t.walk):.2f} bps"
                    if walking
                    else ""
                ),
                samples={"MKT": mkt, "LMT": lmt},
            )
        ]

"""Rule strategies as QOS inputs beside the fast-lane horizons: each reads the features' 1m
vectors of a symbol and says a signal in [-1, 1] (0: nothing to say), which QOS weighs under the
input's name in ``qos.weights`` and tilts by regime (mean reversion in a range, breakouts in a
trend). Pure: vectors in, signals out.

- ``rsi_reversion``: RSI(14) below ``rsi_oversold`` leans long, above ``rsi_overbought`` short,
  in proportion to how far past the band it is.
- ``breakout``: the opening range is the high and low of the first ``orb_minutes`` of the
  session; a close beyond it by ``orb_buffer_bps`` on volume above ``orb_min_volume_z`` leans
  that way, for as long as the price stays beyond the range.
- ``news_event``: a headline tagged with one of ``news_events`` (earnings, an upgrade, ...) whose
  polarity reaches ``news_min_polarity`` leans its way for ``news_hold_s`` (``news_signal``; QOS
  takes it from the sentiment service's scores, not from the vectors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from libs.common.config import STRATEGY_INPUTS, StrategySettings
from proto.features import FeatureVector

NAMES = STRATEGY_INPUTS
# The regime each strategy is made for: its weight is tilted up there and down in the other
# (news_event: made for none).
MADE_FOR = {"rsi_reversion": "range", "breakout": "trend", "news_event": ""}


@dataclass
class _Range:
    day: int = -1
    high: float = -math.inf
    low: float = math.inf


@dataclass
class Strategies:
    config: StrategySettings
    names: list[str]  # the feature set's names, in the vectors' order
    ranges: dict[str, _Range] = field(default_factory=dict)

    def __post_init__(self) -> None:
        index = {n: k for k, n in enumerate(self.names)}
        self.rsi = index.get("rsi14")
        self.minutes = index.get("minutes_since_open")
        self.volume_z = index.get("volume_z")

    def news_signal(self, polarity: float, events: list[str]) -> float:
        """A scored headline's trigger: its polarity, when it is about an event and strong enough."""
        c = self.config
        if abs(polarity) < c.news_min_polarity or not set(events) & set(c.news_events):
            return 0.0
        return max(-1.0, min(1.0, polarity))

    def _value(self, v: FeatureVector, k: int | None) -> float:
        return v.values[k] if k is not None and k < len(v.values) else math.nan

    def signals(self, v: FeatureVector) -> dict[str, float]:
        """Each strategy's signal on this 1m vector."""
        return {"rsi_reversion": self._rsi(v), "breakout": self._breakout(v)}

    def _rsi(self, v: FeatureVector) -> float:
        c, rsi = self.config, self._value(v, self.rsi)
        if math.isnan(rsi):
            return 0.0
        if rsi < c.rsi_oversold:
            return min(1.0, (c.rsi_oversold - rsi) / c.rsi_oversold)
        if rsi > c.rsi_overbought:
            return -min(1.0, (rsi - c.rsi_overbought) / (100.0 - c.rsi_overbought))
        return 0.0

    def _breakout(self, v: FeatureVector) -> float:
        c, minutes = self.config, self._value(v, self.minutes)
        if math.isnan(minutes) or v.price <= 0:
            return 0.0
        day = int(v.ts_event // 1_000_000_000 - minutes * 60) // 3600  # the session's open hour
        r = self.ranges.get(v.symbol)
        if r is None or r.day != day:
            r = self.ranges[v.symbol] = _Range(day)
        if minutes < c.orb_minutes:  # still the opening range
            r.high, r.low = max(r.high, v.price), min(r.low, v.price)
            return 0.0
        if not math.isfinite(r.high):  # started after the range: no range known today
            return 0.0
        volume_z = self._value(v, self.volume_z)
        if math.isnan(volume_z) or volume_z < c.orb_min_volume_z:
            return 0.0
        buffer = c.orb_buffer_bps / 1e4
        if v.price > r.high * (1 + buffer):
            return min(1.0, (v.price / r.high - 1) / (2 * buffer))
        if v.price < r.low * (1 - buffer):
            return -min(1.0, (1 - v.price / r.low) / (2 * buffer))
        return 0.0

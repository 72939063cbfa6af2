"""Rule strategies as QOS inputs (services/qos/strategies.py): RSI mean reversion and the
opening-range breakout say their signals from the 1m vectors, QOS weighs them beside (or instead
of) the horizons, tilted by regime, and an entry carries them in its components."""

from __future__ import annotations

import math
from typing import Any

from libs.common.clock import SimClock
from libs.common.config import FeaturesSettings, StrategySettings
from proto.features import FeatureVector
from proto.news import SentimentScore
from proto.orders import OrderIntent
from proto.signals import QosScore
from services.qos.strategies import Strategies
from tests.kit import cores, stubs
from tests.kit.clocks import OPEN

NAMES = list(FeaturesSettings().names)
MIN = 60_000_000_000


def vec(
    minute: float, price: float = 100.0, rsi: float = 50.0, volume_z: float = 0.0, day: int = 0, **kw: Any
) -> FeatureVector:
    values = [0.0] * len(NAMES)
    values[NAMES.index("rsi14")] = rsi
    values[NAMES.index("minutes_since_open")] = minute
    values[NAMES.index("volume_z")] = volume_z
    return stubs.vector(values, ts=OPEN + day * 1440 * MIN + int(minute * MIN), price=price, **kw)


def test_rsi_reversion_leans_against_the_extremes() -> None:
    s = Strategies(StrategySettings(), NAMES)
    assert s.signals(vec(40, rsi=20))["rsi_reversion"] == (30 - 20) / 30  # oversold: long
    assert s.signals(vec(41, rsi=85))["rsi_reversion"] == -(85 - 70) / 30  # overbought: short
    assert s.signals(vec(42, rsi=50))["rsi_reversion"] == 0.0
    assert s.signals(vec(43, rsi=math.nan))["rsi_reversion"] == 0.0  # still warming up


def test_the_opening_range_breaks_out_on_volume_only() -> None:
    s = Strategies(StrategySettings(orb_minutes=30, orb_buffer_bps=5, orb_min_volume_z=0.5), NAMES)
    for m in range(30):
        assert s.signals(vec(m, price=100 + (m % 3) * 0.1))["breakout"] == 0.0  # the range: 100-100.2
    assert s.signals(vec(35, price=100.1, volume_z=2))["breakout"] == 0.0  # inside
    assert s.signals(vec(36, price=100.5, volume_z=0.1))["breakout"] == 0.0  # quiet: not a breakout
    up = s.signals(vec(37, price=100.5, volume_z=2))["breakout"]
    down = s.signals(vec(38, price=99.8, volume_z=2))["breakout"]
    assert up == 1.0 and down == -1.0  # 15 and 20 bps beyond it, twice the buffer: full
    assert s.signals(vec(37, price=101, volume_z=2, day=1))["breakout"] == 0.0  # next day: no range yet


def test_qos_enters_on_a_strategy_alone_and_tilts_it_by_regime() -> None:
    clock = SimClock(OPEN)
    core = cores.qos(clock, weights={"rsi_reversion": 1.0})
    out = core.on_vector(vec(45, rsi=10, regime="range/mid"))  # no horizon: the vector scores it
    (score,) = [e for e in out if isinstance(e, QosScore)]
    (intent,) = [e for e in out if isinstance(e, OrderIntent)]
    assert intent.side == "BUY" and set(score.components) == {"rsi_reversion"}
    assert score.score == (30 - 10) / 30  # one input, full agreement
    both = cores.qos(clock, weights={"rsi_reversion": 1.0, "breakout": 1.0})
    for m in range(30):
        both.on_vector(vec(m, price=100.0, regime="range/mid"))
    (ranged,) = [e for e in both.on_vector(vec(40, rsi=20, regime="range/mid")) if isinstance(e, QosScore)]
    assert ranged.weights == {"rsi_reversion": 0.75, "breakout": 0.25}  # a range favours reversion
    (trend,) = [e for e in both.on_vector(vec(41, rsi=20, regime="up/mid")) if isinstance(e, QosScore)]
    assert trend.weights == {"rsi_reversion": 0.25, "breakout": 0.75}


def test_unweighted_strategies_change_nothing() -> None:
    core = cores.qos(SimClock(OPEN))  # the default weights: horizons and sentiment only
    assert core.on_vector(vec(45, rsi=5)) == [] and not core.stats["strategy_vectors"]


def headline(minute: float, polarity: float, events: list[str]) -> SentimentScore:
    ts = OPEN + int(minute * MIN)
    p = max(polarity, 0.0)
    return SentimentScore(
        ts_event=ts,
        ts_init=ts,
        news_id=f"n{minute}",
        symbol="IBM",
        polarity=polarity,
        label="positive" if polarity > 0 else "negative",
        probabilities=[max(-polarity, 0.0), 1 - abs(polarity), p],
        events=events,
    )


def test_a_strong_headline_about_an_event_triggers_an_entry_until_it_is_old() -> None:
    core = cores.qos(SimClock(OPEN), weights={"news_event": 1.0})
    assert core.on_vector(vec(39)) == []  # a price to size by; nothing to say yet
    assert core.on_sentiment(headline(40, 0.9, [])) == []  # strong, but about no event
    assert core.on_sentiment(headline(41, 0.3, ["earnings"])) == []  # an event, but lukewarm
    out = core.on_sentiment(headline(42, 0.9, ["upgrade"]))
    (intent,) = [e for e in out if isinstance(e, OrderIntent)]
    assert intent.side == "BUY" and set(intent.components) == {"news_event", "qos"}
    assert core.stats["news_triggers"] == 1
    # still live 29 minutes on (the vector scores it: no horizon weighed); gone after 30
    held = core.on_vector(vec(42 + 29, rsi=50))
    assert not [e for e in held if isinstance(e, OrderIntent)]
    (out_,) = [e for e in core.on_vector(vec(42 + 31, rsi=50)) if isinstance(e, OrderIntent)]
    assert out_.side == "SELL" and out_.target_position == 0

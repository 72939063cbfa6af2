"""A scripted toy day for the RL environment: the plumbing's proof, not a market.

Every ten minutes the fast lane (scripted) says "up" for five minutes, then nothing for five:
QOS proposes a long entry at each "up" minute and exits once the signal is gone. Before 12:45 the
price then rises (an entry pays); after, it falls (an entry loses). The time of day is in the
observation, so a policy that learns anything enters in the morning and waits in the afternoon.
"""

from __future__ import annotations

from libs.common.calendar import market_calendar
from libs.common.config import Settings
from models.policy.env import Tape
from proto.base import Event
from proto.features import FeatureVector, bar_feature_names, bar_feature_set
from proto.market import Quote
from proto.signals import Prediction

NS = 1_000_000_000
DATE = "20131008"
SYMBOL = "TOY"


def toy_settings() -> Settings:
    s = Settings()
    return s.model_copy(update={"qos": s.qos.model_copy(update={"cooldown_s": 0.0})})


def toy_tape(settings: Settings, date: str = DATE, drift_bps_per_min: float = 8.0) -> Tape:
    open_ns, close_ns, _ = market_calendar().session_on(date)  # type: ignore[misc]
    timeframes = tuple(settings.features.timeframes)
    names, feature_set = bar_feature_names(timeframes), bar_feature_set(timeframes)
    horizons = settings.fastlane.horizons
    events: list[tuple[str, Event, int]] = []
    price = 100.0
    for second in range((close_ns - open_ns) // NS):
        ts = open_ns + second * NS
        minute, in_cycle = divmod(second // 60, 10)[0] * 10 + (second // 60) % 10, (second // 60) % 10
        up = in_cycle < 5
        morning = ts < open_ns + (3 * 3600 + 15 * 60) * NS
        if up:  # the move after an "up" signal: with it before 12:45, against it after
            price *= 1 + (drift_bps_per_min if morning else -drift_bps_per_min) / 1e4 / 60
        bid, ask = round(price - 0.005, 2), round(price - 0.005, 2) + 0.01
        events.append(
            (
                f"md.quote.{SYMBOL}",
                Quote(ts_event=ts, ts_init=ts, symbol=SYMBOL, bid=bid, ask=ask, bid_size=50, ask_size=50),
                ts,
            )
        )
        if second % 60 == 59:  # a bar closes: its vector and the fast lane's predictions
            close_ts = ts + NS
            mid = (bid + ask) / 2
            vector = FeatureVector(
                ts_event=close_ts,
                ts_init=close_ts,
                symbol=SYMBOL,
                timeframe="1m",
                feature_set=feature_set,
                values=[0.0] * len(names),
                price=mid,
            )
            events.append((f"feat.1m.{SYMBOL}", vector, close_ts))
            signal = 0.8 if (minute + 1) % 10 < 5 else 0.0
            for h in horizons:
                events.append(
                    (
                        f"sig.fast.{h}.{SYMBOL}",
                        Prediction(
                            ts_event=close_ts,
                            ts_init=close_ts,
                            symbol=SYMBOL,
                            horizon=h,
                            model_version="toy",
                            probability=0.5 + signal / 10,
                            expected_return=0.0,
                            feature_set=feature_set,
                            signal=signal,
                            price=mid,
                            batch=len(horizons),
                        ),
                        close_ts,
                    )
                )
    return Tape(SYMBOL, date, events)

"""Feature vectors, one per symbol and timeframe on each bar close."""

from __future__ import annotations

import hashlib
import math

from proto.base import Event, Symbol
from proto.units import BPS

# The layout of the vectors (services/features builds them; models and the risk gate read them).
# Names and order are part of the contract: the feature set name carries a digest of them.
MICRO_TIMEFRAME = "1s"
TECHNICAL = (
    "ret_bps",
    "ema12_dist_bps",
    "ema26_dist_bps",
    "sma20_dist_bps",
    "macd_bps",
    "macd_signal_bps",
    "macd_hist_bps",
    "rsi14",
    "vwap_dist_bps",
    "adx14",
    "plus_di14",
    "minus_di14",
    "roc10",
    "bb_pctb",
    "bb_width",
    "atr14_bps",
    "stoch_k",
    "stoch_d",
)
MICRO = (
    "spread_bps",
    "quote_imbalance",
    "depth_imbalance",
    "aggression",
    "signed_volume_ratio",
    "volume_z",
    "block_trades",
    "realized_vol_bps",
)
REGIME = ("vol_pctile", "trend", "rel_strength", "minutes_since_open")
CONTEXT = ("rsi14", "macd_hist_bps", "trend")
MICRO_VECTOR = (
    "spread_bps",
    "quote_imbalance",
    "depth_imbalance",
    "aggression",
    "signed_volume",
    "volume",
    "volume_z",
    "block_trades",
    "realized_vol_bps",
    "trade_count",
)


class AtrReader:
    """ATR in price units from a bar vector (its ``atr14_bps`` at the vector's price); None while
    the indicator warms up. Consumers that size or place stops by volatility read it this way."""

    def __init__(self, timeframes: tuple[str, ...]) -> None:
        self.index = bar_feature_names(timeframes).index("atr14_bps")

    def __call__(self, v: FeatureVector) -> float | None:
        if v.price <= 0 or len(v.values) <= self.index:
            return None
        atr_bps = v.values[self.index]
        return None if math.isnan(atr_bps) else atr_bps * v.price / BPS  # NaN: warming up


# The 1-second vector's set: its names and order define it, like a bar set's.
MICRO_FEATURE_SET = f"micro-v1-{hashlib.sha256(','.join(MICRO_VECTOR).encode()).hexdigest()[:8]}"


def bar_feature_names(timeframes: tuple[str, ...]) -> tuple[str, ...]:
    """The ordered names of a bar vector for these timeframes (context per timeframe last)."""
    context = tuple(f"{name}_{tf}" for tf in timeframes for name in CONTEXT)
    return TECHNICAL + MICRO + REGIME + context


def bar_feature_set(timeframes: tuple[str, ...]) -> str:
    """The set's name: names and order define it; the digest changes whenever either does."""
    digest = hashlib.sha256(",".join(bar_feature_names(timeframes)).encode()).hexdigest()[:8]
    return f"bar-v1-{digest}"


class FeatureVector(Event, frozen=True, kw_only=True):
    """``values`` follow the feature set's ordered names; ``feature_set`` names that version so a
    model trained on one layout never scores another."""

    symbol: Symbol
    timeframe: str
    feature_set: str
    values: list[float]
    names: list[str] | None = None
    regime: str = ""
    #: the reference price at the vector's time (mid when quoted, else last trade): labels and
    #: the cost model read it from the recorded vectors, so training needs nothing else
    price: float = 0.0

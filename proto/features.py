"""Feature vectors, one per symbol and timeframe on each bar close."""

from __future__ import annotations

from proto.base import Event, Symbol


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

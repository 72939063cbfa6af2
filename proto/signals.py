"""Model outputs: fast-lane predictions and the QOS score."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from proto.base import Event, SignedUnit, Symbol

Probability = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class Prediction(Event, frozen=True, kw_only=True):
    symbol: Symbol
    horizon: str
    model_version: str
    probability: Probability
    expected_return: float
    feature_set: str = ""
    #: the trading signal in [-1, 1]: (probability - 0.5) in units of the model's usual spread
    signal: float = 0.0
    #: the vector's reference price (QOS scores each horizon's trailing hit rate with it)
    price: float = 0.0
    #: the drift monitor took this model out of service: QOS must ignore it
    quarantined: bool = False
    #: how many predictions fastlane made for this vector (QOS decides once it has them all)
    batch: int = 1
    #: the vector's regime label (e.g. "up/high"): QOS tilts its timeframe weights by it
    regime: str = ""
    #: the universe prefilter found nothing happening: no model ran, the signal is 0 (no view)
    prefiltered: bool = False


class QosScore(Event, frozen=True, kw_only=True):
    """QOS = sum over timeframes of w_tf * S_tf; ``components`` keeps each term for explanation."""

    symbol: Symbol
    score: float
    peak: float
    regime: str
    components: dict[str, float] = {}
    weights: dict[str, float] = {}
    #: "propose": an entry QOS would make, waiting for the RL policy's answer (sig.policy.SYM)
    action: Literal["enter", "exit", "hold", "propose"] = "hold"


class ExternalSignal(Event, frozen=True, kw_only=True):
    """An outside model's prediction for a symbol (the control API's POST /api/signal): QOS takes
    it as the input "external" when ``qos.weights`` gives it a weight, until ``qos.external_ttl_s``
    after its time. ``source`` names the model; ``issued_by`` the API token that sent it."""

    symbol: Symbol
    source: str
    #: the prediction as a trading signal in [-1, 1] (sign: direction; size: conviction)
    signal: SignedUnit
    horizon: str = ""
    confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    issued_by: str = ""


class PolicySignal(Event, frozen=True, kw_only=True):
    """The RL policy's answer to one QOS score: how much of QOS's order size to take (``scale``
    in [0, 1]) and whether to enter now or wait. QOS applies it to the entry it proposed at
    ``score_ts``; exits are never the policy's to make, and the risk gate still has the last word."""

    symbol: Symbol
    #: the QosScore (its ts_event) this answers: QOS matches the answer to its proposal by it
    score_ts: int
    scale: Probability
    timing: Literal["enter", "wait"]
    policy_version: str
    #: what QOS proposed when the policy answered (+1 long entry, -1 short, 0 none)
    proposal: int = 0

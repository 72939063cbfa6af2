"""The policy core: features, fast-lane predictions, fills and QOS scores in; for each QOS score,
the observation to act on, and the answer (sig.policy.SYM) made of the action.

Pure: the model is called by the runtime (or, in training, the action comes from the learner);
time is the events' time. An action that is not finite answers "wait" at scale 0: a broken model
can make the fleet miss entries, never take bigger ones.
"""

from __future__ import annotations

import collections
import math

import numpy as np

from libs.common.clock import Clock
from models.policy.observation import ObservationBuilder, ObservationSpec
from models.policy.serving import decode_action
from proto.execution import Fill
from proto.features import FeatureVector
from proto.signals import PolicySignal, Prediction, QosScore

SOURCE_TIMEFRAME = "1m"


class PolicyCore:
    def __init__(self, clock: Clock, spec: ObservationSpec) -> None:
        self.clock = clock
        self.obs = ObservationBuilder(spec)
        self.stats: collections.Counter[str] = collections.Counter()

    def respec(self, spec: ObservationSpec) -> None:
        """A policy with another observation layout was installed: positions and P&L carry over,
        the inputs refill within a bar."""
        if spec == self.obs.spec:
            return
        fresh = ObservationBuilder(spec)
        for symbol, inputs in self.obs.symbols.items():
            fresh.adopt_book(symbol, inputs.book)
        self.obs = fresh

    def on_vector(self, v: FeatureVector) -> None:
        if v.timeframe != SOURCE_TIMEFRAME:
            return
        if not self.obs.on_vector(v):
            self.stats["vector_of_another_feature_set"] += 1

    def on_prediction(self, p: Prediction) -> None:
        self.obs.on_prediction(p)

    def on_fill(self, f: Fill) -> None:
        self.obs.on_fill(f)

    def observe(self, q: QosScore) -> np.ndarray:
        return self.obs.observe(q)

    def answer(self, q: QosScore, action: np.ndarray, version: str) -> PolicySignal:
        if not all(math.isfinite(float(a)) for a in action):
            self.stats["nonfinite_action"] += 1
            action = np.zeros(2, dtype=np.float32)
        scale, timing = decode_action(action)
        proposal = (1 if q.score > 0 else -1) if q.action == "propose" else 0
        self.stats["answers"] += 1
        if proposal:
            self.stats[f"proposals_{timing}"] += 1
        return PolicySignal(
            ts_event=q.ts_event,
            ts_init=self.clock.now_ns(),
            symbol=q.symbol,
            score_ts=q.ts_event,
            scale=scale,
            timing=timing,
            policy_version=version,
            proposal=proposal,
        )

"""The fast-lane core: feature vectors in, calibrated predictions (and drift alerts) out.

Pure: models are installed by the runtime (which does the file I/O); scoring is a compiled
single-row call. A vector of another feature set is never scored (counted instead), and a model
the drift monitor quarantines keeps publishing, flagged, so QOS can ignore it and people can see it.
"""

from __future__ import annotations

import collections

from libs.common.clock import Clock
from models.fastlane.serving import ServedModel
from proto.alerts import Alert
from proto.features import FeatureVector
from proto.signals import Prediction


class FastlaneCore:
    def __init__(self, clock: Clock, horizons: list[str], source_timeframe: str = "1m") -> None:
        self.clock = clock
        self.horizons = horizons
        self.source_timeframe = source_timeframe
        self.models: dict[str, ServedModel] = {}
        self.dropped: collections.Counter[str] = collections.Counter()
        self.predictions = 0

    def install(self, model: ServedModel) -> ServedModel | None:
        """Swap in a (newly promoted) model; returns the one it replaces."""
        previous = self.models.get(model.horizon)
        self.models[model.horizon] = model
        return previous

    def on_vector(self, v: FeatureVector) -> tuple[list[Prediction], list[Alert]]:
        if v.timeframe != self.source_timeframe:
            return [], []
        usable = [m for h in self.horizons if (m := self.models.get(h)) is not None]
        if not usable:
            self.dropped["no_model"] += 1
            return [], []
        preds: list[Prediction] = []
        alerts: list[Alert] = []
        matching = [m for m in usable if m.feature_set == v.feature_set]
        if len(matching) < len(usable):
            self.dropped["feature_set_mismatch"] += len(usable) - len(matching)
        if matching and len(v.values) != len(matching[0].meta.get("names", v.values)):
            self.dropped["malformed_vector"] += 1  # its set's name, the wrong number of values
            return [], []
        now = self.clock.now_ns()
        for m in matching:
            p, expected = m.scorer.score(v.values)
            m.scored += 1
            signal = max(-1.0, min(1.0, (p - m.signal_center) / m.signal_scale))
            report = m.drift.add(v.values, p)
            if report is not None and report.drifted and not m.quarantined:
                m.quarantined = True
                alerts.append(self._drift_alert(m, v, report.max_psi, report.worst_feature, report.ks))
            preds.append(
                Prediction(
                    ts_event=v.ts_event,
                    ts_init=now,
                    symbol=v.symbol,
                    horizon=m.horizon,
                    model_version=m.version,
                    probability=p,
                    expected_return=expected,
                    feature_set=v.feature_set,
                    signal=signal,
                    price=v.price,
                    quarantined=m.quarantined,
                    batch=len(matching),
                    regime=v.regime,
                )
            )
        self.predictions += len(preds)
        return preds, alerts

    def _drift_alert(self, m: ServedModel, v: FeatureVector, max_psi: float, worst: str, ks: float) -> Alert:
        now = self.clock.now_ns()
        return Alert(
            ts_event=v.ts_event,
            ts_init=now,
            alert_id=f"drift-{m.horizon}-{m.version}",
            severity="warning",
            source="fastlane",
            title=f"fast-lane model {m.horizon} {m.version} quarantined: input drift",
            body=(
                f"rolling PSI {max_psi:.3f} (worst feature {worst}), KS on the score {ks:.3f}, over the "
                f"last {len(m.drift.bins)} vectors. QOS ignores this horizon until a new model is promoted."
            ),
            dedupe=f"drift:{m.horizon}:{m.version}",
            labels={
                "horizon": m.horizon,
                "version": m.version,
                "worst_feature": worst,
                "max_psi": f"{max_psi:.3f}",
            },
        )

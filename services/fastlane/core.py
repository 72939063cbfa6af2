"""The fast-lane core: feature vectors in, calibrated predictions (and drift alerts) out.

Pure: models are installed by the runtime (which does the file I/O); scoring is a compiled
single-row call. A vector of another feature set is never scored (counted instead), and a model
the drift monitor quarantines keeps publishing, flagged, so QOS can ignore it and people can see it.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

from libs.common.clock import Clock
from models.fastlane.drift import Binner, DriftReport
from models.fastlane.sequence import SecondsBuffer
from models.fastlane.serving import ServedModel
from proto.alerts import Alert
from proto.features import MICRO_TIMEFRAME, FeatureVector
from proto.signals import Prediction


@dataclass(frozen=True)
class Prefilter:
    """Cheap proxies, read by feature name, that say nothing is happening on a vector."""

    max_abs_ret_bps: float
    max_volume_z: float
    max_vol_pctile: float
    # the proxies' positions per feature set's names, found once (this runs on every vector)
    positions: dict[tuple[str, ...], tuple[int | None, ...]] = field(default_factory=dict, compare=False)

    def quiet(self, v: FeatureVector, names: list[str]) -> bool:
        key = tuple(names)
        at = self.positions.get(key)
        if at is None:
            index = {n: k for k, n in enumerate(names)}
            at = self.positions[key] = tuple(index.get(n) for n in ("ret_bps", "volume_z", "vol_pctile"))
        ret, volume, vol = (v.values[k] if k is not None and k < len(v.values) else math.nan for k in at)
        if math.isnan(ret) or math.isnan(volume) or math.isnan(vol):
            return False  # unknown is not quiet: score it
        return abs(ret) <= self.max_abs_ret_bps and volume <= self.max_volume_z and vol <= self.max_vol_pctile


class FastlaneCore:
    def __init__(
        self,
        clock: Clock,
        horizons: list[str],
        source_timeframe: str = "1m",
        release_checks: int = 3,
        prefilter: Prefilter | None = None,
    ) -> None:
        self.clock = clock
        self.prefilter = prefilter
        self.release_checks = release_checks
        self.clean_checks: collections.Counter[str] = collections.Counter()  # horizon -> in a row
        self.horizons = horizons
        self.source_timeframe = source_timeframe
        self.models: dict[str, ServedModel] = {}
        # each symbol's last seconds, kept while a served zoo reads them (its sequence family)
        self.seconds = SecondsBuffer()
        self.windowed = False
        self.dropped: collections.Counter[str] = collections.Counter()
        self.predictions = 0

    def install(self, model: ServedModel) -> ServedModel | None:
        """Swap in a (newly promoted) model; returns the one it replaces."""
        previous = self.models.get(model.horizon)
        self.models[model.horizon] = model
        self.clean_checks.pop(model.horizon, None)
        self.windowed = any(getattr(m.scorer, "windowed", False) for m in self.models.values())
        return previous

    def on_vector(self, v: FeatureVector) -> tuple[list[Prediction], list[Alert]]:
        if v.timeframe != self.source_timeframe:
            if v.timeframe == MICRO_TIMEFRAME and self.windowed:
                self.seconds.add(v)
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
        if self.prefilter is not None and matching and self.prefilter.quiet(v, matching[0].meta["names"]):
            self.dropped["prefiltered"] += 1  # not dropped: answered without inference
            preds = [self._no_view(m, v, now, len(matching)) for m in matching]
            self.predictions += len(preds)
            return preds, alerts
        window = self.seconds.window(v.symbol, v.ts_event) if self.windowed else None
        binned: dict[Binner, np.ndarray] = {}  # the vector's drift bins, once for the horizons
        for m in matching:
            p, expected = m.scorer.score(v.values, window)
            m.scored += 1
            signal = max(-1.0, min(1.0, (p - m.signal_center) / m.signal_scale))
            report = m.drift.add(v.values, p, v.symbol, binned)
            if report is not None:
                alert = self._judged(m, v, report)
                if alert is not None:
                    alerts.append(alert)
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

    def _no_view(self, m: ServedModel, v: FeatureVector, now: int, batch: int) -> Prediction:
        return Prediction(
            ts_event=v.ts_event,
            ts_init=now,
            symbol=v.symbol,
            horizon=m.horizon,
            model_version=m.version,
            probability=m.signal_center,
            expected_return=0.0,
            feature_set=v.feature_set,
            signal=0.0,
            price=v.price,
            quarantined=m.quarantined,
            batch=batch,
            regime=v.regime,
            prefiltered=True,
        )

    def _judged(self, m: ServedModel, v: FeatureVector, report: DriftReport) -> Alert | None:
        """Quarantine on drift; release after ``release_checks`` clean checks in a row (the inputs
        came back: a new day like the training days, a feed fixed). Each is an alert."""
        if report.drifted:
            self.clean_checks[m.horizon] = 0
            if not m.quarantined:
                m.quarantined = True
                return self._drift_alert(m, v, report.max_psi, report.worst_feature, report.ks)
            return None
        if not m.quarantined:
            return None
        self.clean_checks[m.horizon] += 1
        if self.clean_checks[m.horizon] < self.release_checks:
            return None
        m.quarantined = False
        self.clean_checks[m.horizon] = 0
        return self._release_alert(m, v, report)

    def _release_alert(self, m: ServedModel, v: FeatureVector, report: DriftReport) -> Alert:
        return Alert(
            ts_event=v.ts_event,
            ts_init=self.clock.now_ns(),
            alert_id=f"release-{m.horizon}-{m.version}-{v.ts_event}",
            severity="warning",
            source="fastlane",
            title=f"fast-lane model {m.horizon} {m.version} released: its inputs are back",
            body=(
                f"{self.release_checks} drift checks in a row found nothing (worst feature "
                f"{report.worst_feature or 'none'} at PSI {report.max_psi:.3f}, KS on the score "
                f"{report.ks:.3f}). QOS weighs this horizon again."
            ),
            dedupe=f"drift-released:{m.horizon}:{m.version}",
            labels={"horizon": m.horizon, "version": m.version},
        )

    def _drift_alert(self, m: ServedModel, v: FeatureVector, max_psi: float, worst: str, ks: float) -> Alert:
        now = self.clock.now_ns()
        return Alert(
            ts_event=v.ts_event,
            ts_init=now,
            alert_id=f"drift-{m.horizon}-{m.version}-{v.ts_event}",  # one per episode: a release may end it
            severity="warning",
            source="fastlane",
            title=f"fast-lane model {m.horizon} {m.version} quarantined: input drift",
            body=(
                f"rolling PSI {max_psi:.3f} (worst feature {worst}), KS on the score {ks:.3f}, over the "
                f"last {m.drift.filled} vectors. QOS ignores this horizon until its inputs come back "
                "(released after clean checks) or a new model is promoted."
            ),
            dedupe=f"drift:{m.horizon}:{m.version}",
            labels={
                "horizon": m.horizon,
                "version": m.version,
                "worst_feature": worst,
                "max_psi": f"{max_psi:.3f}",
            },
        )

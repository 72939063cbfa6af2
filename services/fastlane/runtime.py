"""fastlane runtime: feat.TF.* in, sig.fast.H.SYM out; hot reload of promoted models."""

from __future__ import annotations

import asyncio
from typing import Any

from libs.common.bus import Delivery
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.metrics import Kpi
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from models.fastlane import registry
from models.fastlane.serving import ServedModel, drift_arguments, load_active
from proto.alerts import Alert
from proto.features import MICRO_TIMEFRAME, FeatureVector
from services.fastlane.core import FastlaneCore, Prefilter

log = get_logger(__name__)


class FastlaneApp(ServiceApp):
    name = "fastlane"

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.cfg = settings.fastlane
        self.core: FastlaneCore | None = None
        self.vectors_in = 0
        self.reloads = 0
        self._reloader: asyncio.Task[None] | None = None
        self.owns = Partitioner(settings.partition.count, settings.partition.owned).owns
        self.other_partition = 0
        self._seconds_subscribed = False
        self.seconds_in = 0

    def _load(self, horizon: str) -> ServedModel | None:
        return load_active(
            self.cfg.registry, horizon, self.cfg.engine, self.cfg.compile_cache, drift_arguments(self.cfg)
        )

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        c = self.cfg
        prefilter = (
            Prefilter(c.prefilter_max_abs_ret_bps, c.prefilter_max_volume_z, c.prefilter_max_vol_pctile)
            if c.prefilter
            else None
        )
        self.core = FastlaneCore(
            rt.clock, list(c.horizons), c.source_timeframe, c.drift_release_checks, prefilter
        )
        for horizon in self.cfg.horizons:
            model = await asyncio.to_thread(self._load, horizon)
            if model is None:
                log.warning("no active model for horizon: it is not scored", horizon=horizon)
                continue
            self.core.install(model)
            log.info("model loaded", horizon=horizon, version=model.version, engine=model.engine)
        await rt.subscribe(f"feat.{self.cfg.source_timeframe}.*", self._on_vector, types=FeatureVector)
        await self._seconds_if_needed()
        self._reloader = asyncio.create_task(self._watch_registry(), name="model-reload")

    async def _on_vector(self, d: Delivery[FeatureVector]) -> None:
        assert self.core is not None
        if d.event.timeframe == MICRO_TIMEFRAME:  # a second for the windows, not a vector to score
            if self.owns(d.event.symbol):
                self.seconds_in += 1
                self.core.on_vector(d.event)
            return
        self.vectors_in += 1
        if not self.owns(d.event.symbol):
            self.other_partition += 1
            return
        preds, alerts = self.core.on_vector(d.event)
        for p in preds:
            await self.rt.emit(p)
        for alert in alerts:
            log.warning(alert.title, **alert.labels)
            await self.rt.emit(alert)

    async def _seconds_if_needed(self) -> None:
        """The one-second vectors, from the first served zoo whose sequence family reads them (a
        fleet without one never takes them)."""
        assert self.core is not None
        if self.core.windowed and not self._seconds_subscribed:
            self._seconds_subscribed = True
            await self.rt.subscribe(f"feat.{MICRO_TIMEFRAME}.*", self._on_vector, types=FeatureVector)
            log.info("one-second vectors subscribed: a served model reads them")

    async def _watch_registry(self) -> None:
        """Hot reload: a newly promoted version is loaded off the event loop, then swapped in."""
        assert self.core is not None
        while True:
            await asyncio.sleep(self.cfg.reload_interval_s)
            for horizon in self.cfg.horizons:
                active = registry.active_version(self.cfg.registry, horizon)
                current = self.core.models.get(horizon)
                if active is None or (current is not None and current.version == active):
                    continue
                try:
                    model = await asyncio.to_thread(self._load, horizon)
                except Exception as exc:
                    log.error(
                        "promoted model failed to load; keeping the current one",
                        horizon=horizon,
                        error=repr(exc),
                    )
                    continue
                if model is not None:
                    self.core.install(model)
                    await self._seconds_if_needed()
                    self.reloads += 1
                    log.info("model reloaded", horizon=horizon, version=model.version, engine=model.engine)
                    await self.rt.emit(promoted_alert(horizon, current, model.version, self.rt.now_ns()))

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()

    def kpis(self) -> list[Kpi]:
        """Per horizon served: quarantined or not, and the last drift check's worst PSI (absent
        until a check has run: too few vectors yet is no drift)."""
        core = self.core
        if core is None:
            return []
        out = [Kpi("tf_predictions_total", "Predictions published", core.predictions, kind="counter")]
        for h, m in sorted(core.models.items()):
            out.append(
                Kpi(
                    "tf_model_quarantined",
                    "1 while the horizon's model is quarantined",
                    float(m.quarantined),
                    {"horizon": h},
                )
            )
            if m.drift.last is not None:
                out.append(
                    Kpi(
                        "tf_model_drift_psi",
                        "Worst feature PSI of the last drift check",
                        m.drift.last.max_psi,
                        {"horizon": h},
                    )
                )
                out.append(
                    Kpi(
                        "tf_model_drift_ks",
                        "Score KS distance of the last drift check",
                        m.drift.last.ks,
                        {"horizon": h},
                    )
                )
        return out

    def status(self) -> dict[str, Any]:
        core = self.core
        models = (
            {}
            if core is None
            else {
                h: {
                    "version": m.version,
                    "engine": m.engine,
                    "quarantined": m.quarantined,
                    "scored": m.scored,
                    "drift": None if m.drift.last is None else m.drift.last.__dict__,
                }
                for h, m in core.models.items()
            }
        )
        return {
            "vectors_in": self.vectors_in,
            "predictions": 0 if core is None else core.predictions,
            "dropped": {} if core is None else dict(core.dropped),
            "models": models,
            "reloads": self.reloads,
            "other_partition": self.other_partition,
            # a served zoo's sequence family reads the one-second vectors
            "seconds_in": self.seconds_in,
        }


def promoted_alert(horizon: str, replaced: Any, version: str, now: int) -> Alert:
    """A promoted version now serves: news for people, and the release of a quarantined one."""
    was = "none" if replaced is None else replaced.version
    released = replaced is not None and replaced.quarantined
    title = f"fast-lane model {horizon} {version} promoted and serving (replaces {was})"
    if released:
        title += ": the quarantined model is released"
    return Alert(
        ts_event=now,
        ts_init=now,
        alert_id=f"fastlane-promoted-{horizon}-{version}",
        severity="warning",  # above the default floors: a model change is news for the desk
        source="fastlane",
        title=title,
        dedupe=f"fastlane-promoted:{horizon}",
        labels={"horizon": horizon, "version": version, "replaced": was},
    )

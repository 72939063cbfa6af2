"""policy runtime: feat.1m.*, sig.fast.*.*, exec.fill.> and qos.* in; sig.policy.SYM out.

The served policy is its exported actor (models/policy/serving.py: numpy or ONNX Runtime): no
stable-baselines3, no torch.
A newly promoted version is loaded off the event loop, checked against its probes, and swapped in
(hot reload); one that fails to load or whose observation does not match this fleet's features
and horizons is refused and the current one stays. With no policy at all the service answers
nothing, and QOS falls back as configured (qos.policy_fallback).

In training (models/policy/env.py) the same app runs with ``decide``: the learner's action for each
entry QOS proposes, instead of the model's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from libs.common.bus import Delivery
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.partition import Partitioner
from libs.common.runtime import Runtime, ServiceApp
from models.policy import registry
from models.policy.observation import ObservationSpec
from models.policy.serving import PolicyRefused, ServedPolicy, load_version
from proto.execution import Fill
from proto.features import FeatureVector, bar_feature_names, bar_feature_set
from proto.signals import Prediction, QosScore
from services.policy.core import PolicyCore

log = get_logger(__name__)
Decide = Callable[[np.ndarray, QosScore], Awaitable[np.ndarray]]


def fleet_spec(settings: Settings) -> ObservationSpec:
    """The observation this fleet can build: its feature set and fast-lane horizons."""
    timeframes = tuple(settings.features.timeframes)
    return ObservationSpec(
        feature_set=bar_feature_set(timeframes),
        feature_names=bar_feature_names(timeframes),
        horizons=tuple(settings.fastlane.horizons),
        order_notional=settings.qos.order_notional,
    )


class PolicyApp(ServiceApp):
    name = "policy"

    def __init__(self, settings: Settings, decide: Decide | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.cfg = settings.policy
        self.decide = decide
        self.spec = fleet_spec(settings)
        self.core: PolicyCore | None = None
        self.model: ServedPolicy | None = None
        self.reloads = 0
        self.refused: list[str] = []
        self.inference_ns: list[int] = []
        self._reloader: asyncio.Task[None] | None = None
        self.owns = Partitioner(settings.partition.count, settings.partition.owned).owns

    def check(self, policy: ServedPolicy) -> None:
        s, mine = policy.spec, self.spec
        if s.feature_set != mine.feature_set or s.feature_names != mine.feature_names:
            raise PolicyRefused(
                f"policy {policy.version} observes feature set {s.feature_set}, ours is {mine.feature_set}"
            )
        missing = set(s.horizons) - set(mine.horizons)
        if missing:
            raise PolicyRefused(
                f"policy {policy.version} needs fast-lane horizons {sorted(missing)} this fleet lacks"
            )

    def _load(self, version: str) -> ServedPolicy:
        policy = load_version(self.cfg.registry, version, self.cfg.engine)
        self.check(policy)
        return policy

    def install(self, policy: ServedPolicy) -> None:
        assert self.core is not None
        self.core.respec(policy.spec)
        self.model = policy

    async def start(self, rt: Runtime) -> None:
        self.rt = rt
        self.core = PolicyCore(rt.clock, self.spec)
        if self.decide is None:
            version = registry.active_version(self.cfg.registry)
            if version is None:
                log.warning("no active policy: the service answers nothing", registry=str(self.cfg.registry))
            else:
                try:
                    self.install(await asyncio.to_thread(self._load, version))
                    log.info("policy loaded", version=version)
                except Exception as exc:  # said, and QOS falls back as configured
                    self.refused.append(f"{version}: {exc}")
                    log.error("policy refused: the service answers nothing", version=version, error=str(exc))
            self._reloader = asyncio.create_task(self._watch_registry(), name="policy-reload")
        await rt.subscribe("feat.1m.*", self._on_vector, types=FeatureVector)
        await rt.subscribe("sig.fast.*.*", self._on_prediction, types=Prediction)
        await rt.subscribe("exec.fill.>", self._on_fill, types=Fill, durable="policy-fills", new_only=True)
        await rt.subscribe("qos.*", self._on_score, types=QosScore)

    async def _on_vector(self, d: Delivery[FeatureVector]) -> None:
        if self.core is not None and self.owns(d.event.symbol):
            self.core.on_vector(d.event)

    async def _on_prediction(self, d: Delivery[Prediction]) -> None:
        if self.core is not None and self.owns(d.event.symbol):
            self.core.on_prediction(d.event)

    async def _on_fill(self, d: Delivery[Fill]) -> None:
        if self.core is not None and self.owns(d.event.symbol):
            self.core.on_fill(d.event)

    async def _on_score(self, d: Delivery[QosScore]) -> None:
        q = d.event
        if self.core is None or not self.owns(q.symbol):
            return
        if self.decide is not None:
            if q.action != "propose":
                return  # in training only the entries QOS proposes are the learner's to decide
            action, version = await self.decide(self.core.observe(q), q), "learner"
        elif self.model is not None:
            started = time.perf_counter_ns()
            action = self.model.act(self.core.observe(q))
            if len(self.inference_ns) < 100_000:
                self.inference_ns.append(time.perf_counter_ns() - started)
            version = self.model.version
        else:
            return
        await self.rt.emit(self.core.answer(q, action, version))

    async def _watch_registry(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.reload_interval_s)
            active = registry.active_version(self.cfg.registry)
            current = None if self.model is None else self.model.version
            if active is None or active == current or any(r.startswith(f"{active}:") for r in self.refused):
                continue
            try:
                policy = await asyncio.to_thread(self._load, active)
            except Exception as exc:
                self.refused.append(f"{active}: {exc}")
                log.error("promoted policy refused; keeping the current one", version=active, error=str(exc))
                continue
            self.install(policy)
            self.reloads += 1
            log.info("policy reloaded", version=active, previous=current)

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()

    def status(self) -> dict[str, Any]:
        timings = np.asarray(self.inference_ns[-10_000:], dtype=np.float64)
        return {
            "version": None if self.model is None else self.model.version,
            "engine": None if self.model is None else self.model.engine,
            "reloads": self.reloads,
            "refused": self.refused[-5:],
            "stats": {} if self.core is None else dict(self.core.stats),
            "inference_us": {}
            if not len(timings)
            else {
                "p50": round(float(np.percentile(timings, 50)) / 1e3, 1),
                "p99": round(float(np.percentile(timings, 99)) / 1e3, 1),
                "n": len(self.inference_ns),
            },
        }

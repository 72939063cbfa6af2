"""The policy service and QOS as services on a real NATS: QOS proposes an entry, the policy
answers from its ONNX graph (no stable-baselines3 in the serving path), QOS enters at the
policy's scale or waits; a newly promoted policy is hot-reloaded; one that fails its probes is
refused and the current one stays."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from libs.common.config import Settings, load_settings
from libs.common.nats_bus import NatsBus
from libs.common.runtime import Runtime, ServiceApp
from models.policy import registry
from proto.features import FeatureVector, bar_feature_names, bar_feature_set
from proto.orders import OrderIntent
from proto.signals import PolicySignal, Prediction, QosScore
from tests.helpers import await_until, collector

pytest.importorskip("stable_baselines3")
T0 = 1_381_239_000_000_000_000 + 60 * 60 * 1_000_000_000  # 10:30 New York, 2013-10-08


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny policy trained on the toy day and force-promoted: its quality is not the point here."""
    from models.policy.train import PolicyTrainConfig, train
    from tests.unit.policy_toy import toy_settings, toy_tape

    root = tmp_path_factory.mktemp("policy-registry")
    settings = toy_settings()
    tapes = [toy_tape(settings, "20131008"), toy_tape(settings, "20131009")]
    cfg = PolicyTrainConfig(timesteps=256, n_envs=1, n_steps=64, promote="force")
    result = train(tapes[:1], tapes[1:], settings, cfg, root, progress=False)
    return root, result["version"]


def settings_for(nats_url: str, root: Path) -> Settings:
    return load_settings(
        None,
        nats={"url": nats_url},
        policy={"registry": str(root), "reload_interval_s": 0.2},
        qos={"policy": "on", "policy_fallback": "hold", "cooldown_s": 0},
    )


async def start(app: ServiceApp, settings: Settings) -> tuple[Runtime, asyncio.Task[int]]:
    rt = Runtime(app.name, settings)
    task = asyncio.create_task(rt.run(app, install_signals=False))
    await await_until(lambda: rt.ready or task.done(), 60, what=f"{app.name} ready")
    assert not task.done(), task
    return rt, task


def bar(settings: Settings, minute: int, signal: float) -> list[tuple[str, Any]]:
    timeframes = tuple(settings.features.timeframes)
    ts = T0 + minute * 60_000_000_000
    vector = FeatureVector(
        ts_event=ts,
        ts_init=ts,
        symbol="IBM",
        timeframe="1m",
        feature_set=bar_feature_set(timeframes),
        values=[0.0] * len(bar_feature_names(timeframes)),
        price=180.0,
    )
    horizons = settings.fastlane.horizons
    preds = [
        (
            f"sig.fast.{h}.IBM",
            Prediction(
                ts_event=ts,
                ts_init=ts,
                symbol="IBM",
                horizon=h,
                model_version="test",
                probability=0.5 + signal / 10,
                expected_return=0.0,
                signal=signal,
                price=180.0,
                batch=len(horizons),
            ),
        )
        for h in horizons
    ]
    return [("feat.1m.IBM", vector), *preds]


async def test_qos_proposes_the_policy_answers_and_a_promotion_is_hot_reloaded(
    nats_url: str, trained: tuple[Path, str], tmp_path: Path
) -> None:
    from services.policy.runtime import PolicyApp
    from services.qos.runtime import QosApp

    source, version = trained
    root = tmp_path / "registry"
    shutil.copytree(source, root)
    settings = settings_for(nats_url, root)
    policy, qos = PolicyApp(settings), QosApp(settings)
    policy_rt, policy_task = await start(policy, settings)
    qos_rt, qos_task = await start(qos, settings)
    nc, seen = await collector(nats_url, ">")
    feeder = NatsBus(settings.nats, "feeder")
    await feeder.connect()
    try:
        assert policy.model is not None and policy.model.version == version
        for minute in range(3):
            for subject, event in bar(settings, minute, 0.8):
                await feeder.publish(subject, event)
        await await_until(
            lambda: policy.core is not None and policy.core.stats["answers"] >= 3, 30, what="answers"
        )

        def on_the_bus() -> bool:  # counted by the service before the tap has them: wait for these
            answers = [e for e in seen if isinstance(e, PolicySignal)]
            scores = {e.ts_event for e in seen if isinstance(e, QosScore)}
            return len(answers) >= 3 and all(a.score_ts in scores for a in answers)

        await await_until(on_the_bus, 30, what="the answers and their scores seen on the bus")
        answers = [e for e in seen if isinstance(e, PolicySignal)]
        scores = {e.ts_event: e for e in seen if isinstance(e, QosScore)}
        assert answers and all(a.policy_version == version and a.score_ts in scores for a in answers)
        first = answers[0]
        assert scores[first.score_ts].action == "propose" and first.proposal == 1
        if first.timing == "enter" and math.floor(10_000 * first.scale / 180.0) >= 1:
            await await_until(lambda: any(isinstance(e, OrderIntent) for e in seen), 30, what="intent")
            intent = next(e for e in seen if isinstance(e, OrderIntent))
            assert intent.quantity == math.floor(10_000 * first.scale / 180.0)
            assert f"policy {version}" in intent.reason
        else:
            await await_until(lambda: qos.core.stats["entries_deferred_by_policy"] >= 1, 30, what="a wait")
        assert policy.status()["inference_us"]["p99"] > 0

        # a promotion: the same weights under a new version
        promoted = version + "-promoted"
        shutil.copytree(registry.folder(root) / version, registry.folder(root) / promoted)
        registry.activate(root, promoted)
        await await_until(lambda: policy.reloads == 1, 30, what="hot reload")
        assert policy.model is not None and policy.model.version == promoted

        # a broken export is refused: the service keeps what it has
        broken = version + "-broken"
        shutil.copytree(registry.folder(root) / version, registry.folder(root) / broken)
        meta_path = registry.folder(root) / broken / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["probes"]["actions"] = [[a + 0.5 for a in row] for row in meta["probes"]["actions"]]
        meta_path.write_text(json.dumps(meta))
        registry.activate(root, broken)
        await await_until(lambda: any(r.startswith(broken) for r in policy.refused), 30, what="refusal")
        assert policy.model.version == promoted and "probe" in policy.refused[-1]
    finally:
        await nc.close()
        await feeder.close()
        for rt, task in ((policy_rt, policy_task), (qos_rt, qos_task)):
            rt.request_stop()
            await asyncio.wait_for(task, 30)

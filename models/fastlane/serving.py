"""Loading an active fast-lane model for serving: engine, calibration, drift reference."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.common.config import FastlaneSettings
from models.fastlane import registry
from models.fastlane.drift import DriftMonitor
from models.fastlane.engines import Engine, OnnxEngine, OnnxWindowEngine, Scorer, ZooScorer, load_best_engine
from models.fastlane.zoo import WINDOWED


@dataclass
class ServedModel:
    horizon: str
    version: str
    feature_set: str
    scorer: Scorer | ZooScorer
    signal_center: float
    signal_scale: float
    drift: DriftMonitor
    engine: str
    quarantined: bool = False
    scored: int = 0
    meta: dict[str, Any] = field(default_factory=dict, repr=False)


def drift_arguments(cfg: FastlaneSettings) -> dict[str, Any]:
    """The drift monitor's settings (fastlane.drift_*) as DriftMonitor's arguments."""
    return {
        "window": cfg.drift_window,
        "check_every": cfg.drift_check_every,
        "psi_limit": cfg.drift_psi_limit,
        "ks_limit": cfg.drift_ks_limit,
        "min_samples": cfg.drift_min_samples,
        "min_effective": cfg.drift_min_effective,
        "warmup": cfg.drift_warmup,
        "min_score_shift": cfg.drift_min_score_shift,
    }


def load_active(
    root: Path,
    horizon: str,
    engine: str,
    cache_dir: Path,
    drift_args: dict[str, Any],
) -> ServedModel | None:
    version = registry.active_version(root, horizon)
    if version is None:
        return None
    meta = registry.read_meta(root, horizon, version)
    scorer, chosen = build_scorer(meta, registry.horizon_dir(root, horizon) / version, engine, cache_dir)
    cal = meta["calibration"]
    return ServedModel(
        horizon=horizon,
        version=version,
        feature_set=meta["feature_set"],
        scorer=scorer,
        signal_center=cal.get("signal_center", 0.5),
        signal_scale=cal.get("signal_scale", 0.1),
        drift=DriftMonitor(meta["drift_reference"], **drift_args),
        engine=chosen,
        meta=meta,
    )


def build_scorer(
    meta: dict[str, Any], folder: Path, engine: str, cache_dir: Path | None
) -> tuple[Scorer | ZooScorer, str]:
    """The scorer of a registry version and the name of what serves it. ``engine``: "auto" (the
    order measured at registration, fastest p99 first), "reference" (LightGBM itself: what the
    promotion gate scores with), or one engine for the LightGBM family; the other families of a
    zoo are ONNX models, served by ONNX Runtime."""
    cal = meta["calibration"]
    zoo = meta.get("zoo")
    if zoo is None:
        chosen = _lightgbm_engine(meta, folder, engine, cache_dir)
        return Scorer(chosen, cal["platt_a"], cal["platt_b"], cal["up_mean"], cal["down_mean"]), chosen.name
    members: dict[str, Scorer] = {}
    names = []
    blend = zoo["blend"]
    for family, m in zoo["families"].items():
        if blend["weights"].get(family, 0.0) <= 0.0:
            continue  # a member the balancer gave no weight adds nothing but its latency
        member: Engine
        if family == "lightgbm":
            member = _lightgbm_engine(m, folder, engine, cache_dir)
        elif family in WINDOWED:
            member = OnnxWindowEngine(folder / m["file"])
        else:
            member = OnnxEngine(folder / m["file"])
        members[family] = Scorer(member, m["calibration"]["platt_a"], m["calibration"]["platt_b"], 0.0, 0.0)
        names.append(f"{family}:{member.name}")
    scorer = ZooScorer(members, blend["weights"], blend["temperature"], cal["up_mean"], cal["down_mean"])
    return scorer, "zoo(" + "+".join(names) + ")"


def _lightgbm_engine(meta: dict[str, Any], folder: Path, engine: str, cache_dir: Path | None) -> Engine:
    if engine == "reference":
        return load_best_engine([], folder, cache_dir or folder)
    order = meta.get("engine_order", ["lleaves", "onnx"]) if engine == "auto" else [engine]
    if cache_dir is None:  # timing at registration: a private compile cache
        cache_dir = Path(tempfile.mkdtemp(prefix="lleaves-"))
    return load_best_engine([e for e in order if e != "zoo"], folder, cache_dir)

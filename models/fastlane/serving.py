"""Loading an active fast-lane model for serving: engine, calibration, drift reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.common.config import FastlaneSettings
from models.fastlane import registry
from models.fastlane.drift import DriftMonitor
from models.fastlane.engines import Scorer, load_best_engine


@dataclass
class ServedModel:
    horizon: str
    version: str
    feature_set: str
    scorer: Scorer
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
    # "auto" takes the order measured at registration (fastest p99 first); lightgbm is the fallback.
    order = meta.get("engine_order", ["lleaves", "onnx"]) if engine == "auto" else [engine]
    chosen = load_best_engine(order, registry.horizon_dir(root, horizon) / version, cache_dir)
    cal = meta["calibration"]
    return ServedModel(
        horizon=horizon,
        version=version,
        feature_set=meta["feature_set"],
        scorer=Scorer(chosen, cal["platt_a"], cal["platt_b"], cal["up_mean"], cal["down_mean"]),
        signal_center=cal.get("signal_center", 0.5),
        signal_scale=cal.get("signal_scale", 0.1),
        drift=DriftMonitor(meta["drift_reference"], **drift_args),
        engine=chosen.name,
        meta=meta,
    )

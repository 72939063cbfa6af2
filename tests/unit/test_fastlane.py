"""The fast lane: engines agree, calibrated scoring, drift on a shifted distribution, hot swap."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from libs.common.clock import SimClock
from models.fastlane import registry
from models.fastlane.drift import DriftMonitor, reference
from models.fastlane.engines import load_engine
from models.fastlane.serving import load_active
from proto.features import FeatureVector
from services.fastlane.core import FastlaneCore
from tests.kit import stubs

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "registry"
DRIFT = {"window": 300, "check_every": 50, "psi_limit": 0.25, "ks_limit": 0.3, "min_samples": 300}


def _rows(n: int, names: list[str], seed: int = 1) -> np.ndarray:
    """Rows shaped like the shipped model's training data: its drift reference's bins, sampled."""
    meta = registry.read_meta(SHIPPED, "15m", registry.active_version(SHIPPED, "15m") or "")
    rng = np.random.default_rng(seed)
    cols = []
    for f in meta["drift_reference"]["features"]:
        edges = [min(f["edges"], default=0.0) - 1.0, *f["edges"], max(f["edges"], default=0.0) + 1.0]
        probs = np.array(f["expected"])
        bins = rng.choice(len(probs), size=n, p=probs / probs.sum())
        lo = np.array(edges)[np.clip(bins - 1, 0, len(edges) - 2)]
        hi = np.array(edges)[np.clip(bins, 1, len(edges) - 1)]
        col = lo + (hi - lo) * rng.random(n)
        col[bins == 0] = np.nan
        cols.append(col)
    assert len(cols) == len(names)
    return np.column_stack(cols)


@pytest.fixture(scope="module")
def meta() -> dict:  # type: ignore[type-arg]
    version = registry.active_version(SHIPPED, "15m")
    assert version is not None, "the repo ships an active 15m model"
    return registry.read_meta(SHIPPED, "15m", version)


def test_the_shipped_registry_has_an_active_model_per_horizon(meta: dict) -> None:  # type: ignore[type-arg]
    for horizon in ("5m", "15m", "30m", "60m"):
        version = registry.active_version(SHIPPED, horizon)
        assert version is not None
        m = registry.read_meta(SHIPPED, horizon, version)
        assert m["feature_set"] == meta["feature_set"] and m["horizon"] == horizon
        assert {"data_span", "cv", "calibration", "code_version", "drift_reference", "engines"} <= set(m)


def test_engines_agree_on_the_same_rows_nan_included(meta: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    rows = _rows(300, meta["names"])
    assert np.isnan(rows).any()
    folder = registry.horizon_dir(SHIPPED, "15m") / meta["version"]
    engines = {name: load_engine(name, folder, tmp_path) for name in ("lightgbm", "lleaves", "onnx")}
    reference_p = [engines["lightgbm"].raw_probability(list(r)) for r in rows]
    for name in ("lleaves", "onnx"):
        got = [engines[name].raw_probability(list(r)) for r in rows]
        # lleaves computes in float64 like LightGBM; ONNX Runtime's tree ensemble in float32.
        tol = 1e-9 if name == "lleaves" else 1e-5
        assert np.allclose(got, reference_p, atol=tol), name


def test_drift_monitor_flags_a_shifted_distribution_only(meta: dict) -> None:  # type: ignore[type-arg]
    names = meta["names"]
    ref = meta["drift_reference"]
    same = DriftMonitor(ref, **DRIFT)
    reports = [same.add(list(r), 0.5) for r in _rows(600, names, seed=2)]
    assert all(r is None or r.max_psi < 0.25 for r in reports)
    shifted = DriftMonitor(ref, **DRIFT)
    rows = _rows(600, names, seed=3)
    k = names.index("quote_imbalance")
    rows[:, k] = rows[:, k] * 0.2 + 0.8  # the book leans one way all day: a different market
    last = [r for r in (shifted.add(list(row), 0.5) for row in rows) if r is not None][-1]
    assert last.drifted and last.worst_feature == "quote_imbalance" and last.excess_psi > 0.25


def test_warm_up_nans_are_not_drift() -> None:
    names = ["a", "b"]
    X = np.column_stack([np.linspace(0, 1, 1000), np.linspace(5, 6, 1000)])
    ref = reference(X, np.linspace(0.4, 0.6, 1000), names)
    monitor = DriftMonitor(ref, window=200, check_every=50, min_samples=100)
    for i in range(200):
        b = math.nan if i < 120 else 5 + (i % 100) / 100
        monitor.add([(i % 100) / 100, b], 0.4 + (i % 100) / 500)
    report = monitor.check()
    assert not report.drifted, report


def _vector(values: list[float], feature_set: str, ts: int = 1) -> FeatureVector:
    return stubs.vector(values, feature_set=feature_set, ts=ts, price=180.0, regime="up/mid")


def test_core_scores_every_horizon_quarantines_on_drift_and_refuses_other_feature_sets(
    meta: dict,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    core = FastlaneCore(SimClock(5), ["15m"])
    model = load_active(SHIPPED, "15m", "auto", tmp_path, DRIFT)
    assert model is not None and model.engine == meta["engine_order"][0]
    core.install(model)
    rows = _rows(400, meta["names"], seed=4)
    preds, alerts = core.on_vector(_vector(list(rows[0]), meta["feature_set"]))
    assert len(preds) == 1 and not alerts
    p = preds[0]
    assert 0 < p.probability < 1 and -1 <= p.signal <= 1 and p.batch == 1 and p.price == 180.0
    assert p.model_version == model.version and p.regime == "up/mid"
    assert core.on_vector(_vector(list(rows[0]), "bar-v0-other")) == ([], [])
    assert core.dropped["feature_set_mismatch"] == 1
    assert core.on_vector(_vector(list(rows[0])[:-1], meta["feature_set"])) == ([], [])
    assert core.dropped["malformed_vector"] == 1
    k = meta["names"].index("quote_imbalance")
    alerts_seen = []
    for r in rows[1:]:
        r[k] = r[k] * 0.2 + 0.8
        preds, alerts = core.on_vector(_vector(list(r), meta["feature_set"]))
        alerts_seen += alerts
    assert len(alerts_seen) == 1 and alerts_seen[0].severity == "warning"
    assert "quote_imbalance" in alerts_seen[0].body and preds[0].quarantined


def test_promotion_swaps_the_active_version_atomically(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    for version in ("v1", "v2"):
        folder = registry.horizon_dir(root, "5m") / version
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text("{}")
    assert registry.active_version(root, "5m") is None
    registry.activate(root, "5m", "v1")
    assert registry.active_version(root, "5m") == "v1"
    registry.activate(root, "5m", "v2")
    assert registry.active_version(root, "5m") == "v2"
    with pytest.raises(FileNotFoundError):
        registry.activate(root, "5m", "v3")


def test_a_promoted_version_is_an_alert_that_says_what_it_replaced_and_releases() -> None:
    from types import SimpleNamespace

    from services.fastlane.runtime import promoted_alert

    quarantined = SimpleNamespace(version="v1", quarantined=True)
    alert = promoted_alert("60m", quarantined, "v2", 1)
    assert alert.severity == "warning" and alert.source == "fastlane"
    assert (
        alert.title
        == "fast-lane model 60m v2 promoted and serving (replaces v1): the quarantined model is released"
    )
    assert promoted_alert("5m", None, "v1", 1).title.endswith("(replaces none)")


def test_the_prefilter_answers_a_quiet_vector_without_running_a_model(
    meta: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    from services.fastlane.core import Prefilter

    names = meta["names"]
    core = FastlaneCore(SimClock(5), ["15m"], prefilter=Prefilter(2.0, 0.0, 0.5))
    model = load_active(SHIPPED, "15m", "auto", tmp_path, DRIFT)
    assert model is not None
    core.install(model)
    quiet = list(_rows(1, names, seed=5)[0])
    quiet[names.index("ret_bps")], quiet[names.index("volume_z")], quiet[names.index("vol_pctile")] = (
        0.5,
        -1.0,
        0.2,
    )
    (p,), _ = core.on_vector(_vector(quiet, meta["feature_set"]))
    assert p.prefiltered and p.signal == 0.0 and p.probability == model.signal_center
    assert model.scored == 0 and core.dropped["prefiltered"] == 1 and not model.drift.seen_by_symbol
    busy = list(quiet)
    busy[names.index("ret_bps")] = 12.0  # a 12 bps minute: something is happening
    (q,), _ = core.on_vector(_vector(busy, meta["feature_set"]))
    assert not q.prefiltered and model.scored == 1
    unknown = list(quiet)
    unknown[names.index("vol_pctile")] = math.nan  # unknown is not quiet
    (r,), _ = core.on_vector(_vector(unknown, meta["feature_set"]))
    assert not r.prefiltered and model.scored == 2

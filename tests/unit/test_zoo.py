"""The model zoo: each family trained by the same recipe, the ZooBalancer's blend, and the served
zoo (ONNX members, compiled trees) reproducing the trained one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from libs.common.clock import SimClock
from libs.common.config import FeaturesSettings
from libs.common.markettime import parse_duration_ns
from models.fastlane import registry, zoo
from models.fastlane.dataset import CostModel, label, lean_tick_dates, replay_vectors
from models.fastlane.sequence import NS_PER_S, WIDTH, SecondsBuffer, SequenceWindows, window
from models.fastlane.serving import build_scorer, load_active
from models.fastlane.train import TrainConfig, fit_zoo, train_horizon
from proto.features import FeatureVector
from services.fastlane.core import FastlaneCore
from tests.helpers import REPO

SAMPLE = REPO / "data" / "sample" / "lean"


def _probability(rng: np.random.Generator, truth: np.ndarray, skill: float) -> np.ndarray:
    """A calibrated-looking forecast of ``truth`` whose logit carries ``skill`` of it, plus noise."""
    z = skill * (2 * truth - 1) + rng.normal(0, 1, len(truth))
    return 1 / (1 + np.exp(-z))


def test_one_family_is_served_as_it_is() -> None:
    p = np.array([0.1, 0.55, 0.9])
    blend = zoo.fit_blend({"lightgbm": p}, np.array([0, 1, 1]))
    assert blend == zoo.Blend({"lightgbm": 1.0}, 1.0, "single")
    assert blend.combine({"lightgbm": p}) is p
    assert blend.combine_one({"lightgbm": 0.55}) == 0.55


def test_the_balancer_weighs_skill_shares_between_twins_and_drops_what_bets_against() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 4000).astype(float)
    skilled = _probability(rng, y, 1.0)
    twin = np.clip(skilled + rng.normal(0, 0.002, len(y)), 1e-4, 1 - 1e-4)  # says the same thing
    weak = _probability(rng, y, 0.3)
    noise = _probability(rng, np.zeros_like(y), 0.0)
    contrary = 1 - _probability(rng, y, 0.6)
    blend = zoo.fit_blend(
        {"a": skilled, "a_twin": twin, "weak": weak, "noise": noise, "contrary": contrary}, y
    )
    w = blend.weights
    assert blend.method == "ridge" and abs(sum(w.values()) - 1) < 1e-9
    assert w["contrary"] == 0.0  # a member whose logit predicts the opposite is never bet against
    assert w["noise"] < 0.05 and w["weak"] < w["a"]
    # Twins share one weight between them instead of each taking a skilled member's whole share.
    assert abs(w["a"] - w["a_twin"]) < 0.1 and w["a"] + w["a_twin"] > 0.6
    assert 0.5 <= blend.temperature <= 5.0
    # The blend's log loss out of sample is no worse than its best member's.
    y2 = rng.integers(0, 2, 4000).astype(float)
    fresh = {
        "a": (s := _probability(rng, y2, 1.0)),
        "a_twin": np.clip(s + rng.normal(0, 0.002, len(y2)), 1e-4, 1 - 1e-4),
        "weak": _probability(rng, y2, 0.3),
        "noise": _probability(rng, np.zeros_like(y2), 0.0),
        "contrary": 1 - _probability(rng, y2, 0.6),
    }

    def loss(p: np.ndarray) -> float:
        p = np.clip(p, 1e-6, 1 - 1e-6)
        return float(-np.mean(y2 * np.log(p) + (1 - y2) * np.log(1 - p)))

    assert loss(blend.combine(fresh)) <= loss(fresh["a"]) + 0.005
    row = {f: float(v[0]) for f, v in fresh.items()}
    assert blend.combine_one(row) == pytest.approx(
        float(blend.combine({f: v[:1] for f, v in fresh.items()})[0])
    )


def test_too_few_rows_blend_equally() -> None:
    p = np.full(20, 0.6)
    blend = zoo.fit_blend({"lightgbm": p, "logistic": p}, np.ones(20))
    assert blend.method == "equal" and blend.weights == {"lightgbm": 0.5, "logistic": 0.5}


def test_unknown_families_are_refused() -> None:
    assert zoo.check_families(["logistic", "lightgbm", "logistic"]) == ["logistic", "lightgbm"]
    with pytest.raises(ValueError, match="unknown model families"):
        zoo.check_families(["xgboost"])


@pytest.fixture(scope="module")
def replayed() -> tuple[list[FeatureVector], list[FeatureVector], SequenceWindows]:
    """The sample day: its 1m vectors, every vector in the order features emitted them, and the
    one-second windows training keeps."""
    days = lean_tick_dates(SAMPLE, ["IBM", "BAC"])
    everything: list[FeatureVector] = []
    windows = SequenceWindows()
    bars = list(
        replay_vectors(SAMPLE, days, FeaturesSettings(), progress=False, windows=_Tee(windows, everything))
    )  # type: ignore[arg-type]
    return bars, everything, windows


class _Tee:
    """Feeds the windows and keeps every vector seen, in order."""

    def __init__(self, windows: SequenceWindows, seen: list[FeatureVector]) -> None:
        self.windows, self.seen = windows, seen

    def see(self, v: FeatureVector) -> None:
        self.seen.append(v)
        self.windows.see(v)


@pytest.fixture(scope="module")
def sample_vectors(
    replayed: tuple[list[FeatureVector], list[FeatureVector], SequenceWindows],
) -> list[FeatureVector]:
    return replayed[0]


def test_a_window_is_the_last_seconds_by_slot_with_presence() -> None:
    t = 1_000 * NS_PER_S
    seen = [(t - 70 * NS_PER_S, [9.0] * WIDTH), (t - 59 * NS_PER_S, [1.0] * WIDTH), (t, [2.0] * WIDTH)]
    w = window(seen, t, 60)
    assert w.shape == (60, WIDTH + 1) and w.dtype == np.float32
    assert w[0, 0] == 1.0 and w[0, WIDTH] == 1.0  # 59 s before: the first slot
    assert w[-1, 0] == 2.0 and w[-1, WIDTH] == 1.0  # the bar's own last second: the last slot
    assert np.isnan(w[1:-1, :WIDTH]).all() and not w[1:-1, WIDTH].any()  # nothing happened
    assert 9.0 not in w  # older than the window
    buffer = SecondsBuffer(60)
    for ts, values in seen:
        buffer.add(
            FeatureVector(
                ts_event=ts, ts_init=ts, symbol="IBM", timeframe="1s", feature_set="", values=values
            )
        )
    np.testing.assert_array_equal(buffer.window("IBM", t), w)  # the serving ring: the same window
    np.testing.assert_array_equal(buffer.window("BAC", t), window((), t, 60))


def test_the_served_zoo_reproduces_the_trained_one(
    replayed: tuple[list[FeatureVector], list[FeatureVector], SequenceWindows], tmp_path: Path
) -> None:
    """Every family exported (trees as text and compiled, the others as ONNX) and blended at
    serving gives the probabilities the trained zoo gives, to float32 precision."""
    sample_vectors, _, windows = replayed
    names = list(FeaturesSettings().names)
    ds = label(
        sample_vectors,
        parse_duration_ns("15m"),
        CostModel(0.5, spread_index=names.index("spread_bps")),
        atr_index=names.index("atr14_bps"),
        windows=windows,
    )
    assert ds.S is not None and ds.S.shape == (len(ds), 60, WIDTH + 1)
    cfg = TrainConfig(families=["lightgbm", "logistic", "mlp", "sequence"], mlp_epochs=8)
    blend = zoo.Blend({"lightgbm": 0.4, "logistic": 0.2, "mlp": 0.2, "sequence": 0.2}, 1.4)
    fitted = fit_zoo(ds, np.arange(len(ds)), cfg, blend)
    for family, member in fitted.members.items():
        zoo.export(family, member.model, tmp_path, len(names), member.best_iteration)
    meta = {
        "calibration": {"up_mean": fitted.up_mean, "down_mean": fitted.down_mean},
        "zoo": {
            "families": {
                f: {
                    "file": zoo.ARTIFACT[f],
                    "calibration": {"platt_a": m.platt_a, "platt_b": m.platt_b},
                    "engine_order": ["lleaves", "onnx"],
                }
                for f, m in fitted.members.items()
            },
            "blend": blend.to_meta(),
        },
    }
    expected = fitted.predict(ds.X[:300], ds.S[:300])
    for engine in ("auto", "reference", "onnx"):
        scorer, served_by = build_scorer(meta, tmp_path, engine, tmp_path / "cache")
        got = np.array(
            [scorer.score(list(map(float, row)), w)[0] for row, w in zip(ds.X[:300], ds.S[:300], strict=True)]
        )
        assert np.max(np.abs(got - expected)) < 2e-4, (engine, served_by)
    assert served_by == "zoo(lightgbm:onnx+logistic:onnx+mlp:onnx+sequence:onnx)"
    # each member is a real model, not a constant (its raw scores vary; the calibration may
    # shrink an uninformative one to about its base rate)
    assert all(np.std(m.raw(ds.X, ds.S)) > 1e-4 for m in fitted.members.values())


def test_fastlane_serves_the_sequence_family_the_windows_it_was_trained_on(
    replayed: tuple[list[FeatureVector], list[FeatureVector], SequenceWindows], tmp_path: Path
) -> None:
    """The fast-lane core, fed the day as features published it (seconds and bars), builds each
    bar's window as training did: its predictions are the registered zoo's on the training
    windows, exactly."""
    bars, everything, windows = replayed
    names = list(FeaturesSettings().names)
    cfg = TrainConfig(
        horizons=["15m"], families=["lightgbm", "sequence"], folds=3, promote="force", mlp_epochs=8
    )
    out = train_horizon(bars, names, FeaturesSettings().feature_set, "15m", cfg, tmp_path, None, windows)
    folder = registry.horizon_dir(tmp_path, "15m") / out["version"]
    meta = json.loads((folder / "meta.json").read_text())
    meta["zoo"]["blend"]["weights"] = {"lightgbm": 0.5, "sequence": 0.5}  # both served, whatever was fitted
    (folder / "meta.json").write_text(json.dumps(meta))
    served = load_active(tmp_path, "15m", "auto", tmp_path / "cache", {})
    assert served is not None and served.scorer.windowed  # type: ignore[union-attr]
    core = FastlaneCore(SimClock(0), ["15m"])
    core.install(served)
    predictions = [p for v in everything for p in core.on_vector(v)[0]]
    assert len(predictions) == len(bars) == 780
    reference, _ = build_scorer(meta, folder, "auto", tmp_path / "cache")
    for p, v in zip(predictions[::37], bars[::37], strict=True):
        assert p.probability == reference.score(v.values, windows.of(v.symbol, v.ts_event))[0]
    # without the seconds (a zoo without the sequence family) nothing is buffered
    assert len(core.seconds) > 0
    plain = FastlaneCore(SimClock(0), ["15m"])
    assert not plain.windowed


def test_a_zoo_is_trained_reported_registered_and_served(sample_vectors: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    names = list(FeaturesSettings().names)
    cfg = TrainConfig(horizons=["15m"], families=["lightgbm", "logistic", "mlp"], folds=3, promote="force")
    out = train_horizon(sample_vectors, names, FeaturesSettings().feature_set, "15m", cfg, tmp_path)
    # every family judged on the same folds as the blend, with its own summary
    assert set(out["families"]) == {"lightgbm", "logistic", "mlp"}
    for fold in out["folds"]:
        assert set(fold["families"]) == {"lightgbm", "logistic", "mlp"}
        assert fold["families"]["logistic"]["rows"] == fold["rows"]
    assert out["folds"][0]["blend"]["method"] == "equal"  # no earlier fold to fit weights on
    meta = registry.read_meta(tmp_path, "15m", out["version"])
    folder = registry.horizon_dir(tmp_path, "15m") / out["version"]
    for family, m in meta["zoo"]["families"].items():
        assert (folder / m["file"]).exists(), family
        assert m["engines"] and all(e["p99_us"] > 0 for e in m["engines"].values())
        assert m["cv"]["mean_auc"] == out["families"][family]["mean_auc"]
    serving = meta["zoo"]["blend"]["serving"]
    assert serving["p99_us"] > 0 and serving["engine"].startswith("zoo(")
    assert abs(sum(meta["zoo"]["blend"]["weights"].values()) - 1) < 1e-9
    served = load_active(tmp_path, "15m", "auto", tmp_path / "cache", {})
    assert served is not None and served.version == out["version"] and served.engine.startswith("zoo(")
    p, expected = served.scorer.score(sample_vectors[100].values)
    assert 0 < p < 1 and expected == pytest.approx(
        p * meta["calibration"]["up_mean"] + (1 - p) * meta["calibration"]["down_mean"]
    )
    report = json.loads(json.dumps(out["summary"]))  # the gate judged the blend
    assert report["folds"] == 3 and out["promotion"]["promoted"]

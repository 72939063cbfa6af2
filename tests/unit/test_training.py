"""`tradefleet train fastlane` on the shipped sample day: labels, purged folds, registry, gate."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from libs.common.config import FeaturesSettings
from models.fastlane import registry
from models.fastlane.dataset import CostModel, label, lean_tick_dates, replay_vectors
from models.fastlane.train import walk_forward_folds
from proto.features import FeatureVector
from tests.helpers import train_fastlane

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "lean"
MIN = 60_000_000_000
T0 = 1_381_239_000_000_000_000


@pytest.fixture(scope="module")
def vectors() -> list[FeatureVector]:
    days = lean_tick_dates(SAMPLE, ["IBM", "BAC"])
    assert days == {"20131008": ["IBM", "BAC"]}
    return list(replay_vectors(SAMPLE, days, FeaturesSettings(), progress=False))


def test_labels_are_net_of_cost_and_never_cross_the_day() -> None:
    series = [
        FeatureVector(
            ts_event=T0 + m * MIN,
            ts_init=0,
            symbol="X",
            timeframe="1m",
            feature_set="f",
            values=[2.0],
            price=p,
        )
        for m, p in enumerate([100.0, 100.01, 100.10, 99.90, 100.0])
    ]
    ds = label(series, 2 * MIN, CostModel(commission_bps=0.5, spread_index=0))
    # cost = (2 + 2*0.5) bps = 0.0003. 100 -> 100.10: +0.001 up; 100.01 -> 99.90: down;
    # 100.10 -> 100.0: -0.000999 down; the last two have no price two minutes later.
    assert ds.y.tolist() == [1, 0, 0] and ds.neutral == 0
    assert np.allclose(ds.cost, 0.0003) and (ds.end_ts - ds.ts == 2 * MIN).all()
    small = label(series[:3], MIN, CostModel(commission_bps=0.5, spread_index=0))
    assert small.neutral == 1  # 100 -> 100.01 is smaller than the cost


def test_triple_barrier_takes_the_first_barrier_touched() -> None:
    # ATR 10 bps at every step; barrier width 1 x ATR = 0.001 (wider than the 0.0003 cost).
    prices = [100.0, 99.95, 99.89, 100.2, 100.3]  # touches the lower barrier first, ends up
    series = [
        FeatureVector(
            ts_event=T0 + m * MIN,
            ts_init=0,
            symbol="X",
            timeframe="1m",
            feature_set="f",
            values=[2.0, 10.0],
            price=p,
        )
        for m, p in enumerate(prices)
    ]
    cost = CostModel(commission_bps=0.5, spread_index=0)
    fixed = label(series, 4 * MIN, cost)
    barrier = label(series, 4 * MIN, cost, method="triple-barrier", barrier_atr=1.0, atr_index=1)
    assert fixed.y[0] == 1 and barrier.y[0] == 0


def test_folds_are_purged_and_embargoed(vectors: list[FeatureVector]) -> None:
    names = list(FeaturesSettings().names)
    ds = label(vectors, 15 * MIN, CostModel(spread_index=names.index("spread_bps")))
    folds = walk_forward_folds(ds, 3, 5 * MIN)
    assert len(folds) >= 2
    for train, test in folds:
        assert ds.end_ts[train].max() < ds.ts[test].min()  # no label window reaches the test block
        assert ds.ts[train].max() < ds.ts[test].min() - 5 * MIN


def test_train_registers_reports_and_gates(tmp_path: Path) -> None:
    root, report = tmp_path / "registry", tmp_path / "report"

    def train(promote: str) -> subprocess.CompletedProcess[str]:
        return train_fastlane(str(SAMPLE), root, promote, report)

    first = train("force")
    assert first.returncode == 0, first.stderr
    version = registry.active_version(root, "15m")
    assert version is not None and "PROMOTED" in first.stdout
    meta = registry.read_meta(root, "15m", version)
    assert meta["feature_set"] == FeaturesSettings().feature_set and len(meta["cv"]["folds"]) >= 2
    assert meta["data_span"][0].startswith("2013-10-08") and meta["symbols"] == ["BAC", "IBM"]
    assert set(meta["engines"]) == {"lleaves", "onnx", "lightgbm"}
    assert (root / "fastlane" / "15m" / version / "model.onnx").stat().st_size > 0
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 and "AUC" in page
    assert json.loads((report / "report.json").read_text())["horizons"][0]["version"] == version
    # The same data again cannot beat the active model (same log loss): the gate keeps it.
    second = train("gate")
    assert second.returncode == 0, second.stderr
    assert registry.active_version(root, "15m") == version
    assert len(registry.versions(root, "15m")) == 2 and "not promoted" in second.stdout
    newest = registry.read_meta(root, "15m", registry.versions(root, "15m")[-1])
    assert newest["promotion"]["promoted"] is False and newest["promotion"]["previous_active"] == version

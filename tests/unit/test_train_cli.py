"""`tradefleet train`: days in either format, exactly the folds asked for, and a reason for every
promotion verdict."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner, Result

import models.fastlane.cli
import models.policy.cli
import tradefleet.commands.common
from libs.common.config import FeaturesSettings, Settings
from libs.common.markettime import parse_duration_ns
from models.fastlane.dataset import CostModel, Dataset, label, lean_tick_dates, replay_vectors
from models.fastlane.train import MIN_TEST_ROWS, MIN_TRAIN_ROWS, TrainConfig, _gate, walk_forward_folds
from tradefleet.cli import app

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "lean"
EMBARGO_NS = parse_duration_ns("5m")


@pytest.fixture(autouse=True)
def _no_tradefleet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("TRADEFLEET_")]:
        monkeypatch.delenv(name)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "240"})


@pytest.fixture
def fastlane_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `train fastlane` hands to the training run (which is replaced: no training here)."""
    calls: list[dict[str, Any]] = []

    def run(data: str, cfg: TrainConfig, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append({"data": data, "cfg": cfg, "dates": args[4], "symbols": args[3]})
        return {"results": [], "report_html": "report.html"}

    monkeypatch.setattr(models.fastlane.cli, "run", run)
    return calls


def test_fastlane_takes_days_in_either_format(fastlane_calls: list[dict[str, Any]]) -> None:
    result = invoke(
        "train", "fastlane", "--data", str(SAMPLE), "--dates", "2013-10-08, 20131009", "--folds", "4"
    )
    assert result.exit_code == 0, result.output
    assert fastlane_calls[0]["dates"] == ["20131008", "20131009"]
    assert fastlane_calls[0]["cfg"].folds == 4


@pytest.mark.parametrize("bad", ["2013-13-08", "8.10.2013", "201310"])
def test_fastlane_refuses_a_bad_day_in_one_line_before_loading_anything(
    bad: str, fastlane_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def loaded(*_: object, **__: object) -> Settings:
        raise AssertionError("the command went on to load its settings")

    monkeypatch.setattr(tradefleet.commands.common, "load_settings", loaded)
    result = invoke("train", "fastlane", "--data", str(SAMPLE), "--dates", f"20131008,{bad}")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"--dates: not a date: {bad!r} (expected YYYY-MM-DD or YYYYMMDD)"
    ]
    assert not fastlane_calls


def test_policy_takes_days_in_either_format(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run(settings: Settings, days: list[Any], held: set[str], *args: Any) -> dict[str, Any]:
        seen.update(days=[d.date for d in days], held=held)
        raise ValueError("stopped by the test before training")

    monkeypatch.setattr(models.policy.cli, "run", run)
    args = ["train", "policy", "--data", str(SAMPLE), "--symbols", "IBM"]
    result = invoke(*args, "--start", "2013-10-07", "--end", "20131008", "--hold-out", "2013-10-08")
    assert result.exit_code == 2 and "stopped by the test" in result.output
    assert seen == {"days": ["20131008"], "held": {"20131008"}}  # the 7th has no sample data
    bad = invoke(*args, "--start", "2013-10-08", "--hold-out", "2013/10/08")
    assert bad.exit_code == 2 and "--hold-out: not a date: '2013/10/08'" in bad.output


@pytest.fixture(scope="module")
def labelled() -> dict[str, Dataset]:
    """The shipped sample day (IBM and BAC, 2013-10-08) labelled for two horizons."""
    days = lean_tick_dates(SAMPLE, ["IBM", "BAC"])
    vectors = list(replay_vectors(SAMPLE, days, FeaturesSettings(), progress=False))
    names = list(FeaturesSettings().names)
    cost = CostModel(spread_index=names.index("spread_bps"))
    return {h: label(vectors, parse_duration_ns(h), cost) for h in ("5m", "60m")}


@pytest.mark.parametrize("horizon", ["5m", "60m"])
@pytest.mark.parametrize("folds", [2, 4])
def test_folds_flag_gives_that_many_evaluated_folds(
    labelled: dict[str, Dataset], horizon: str, folds: int
) -> None:
    ds = labelled[horizon]
    split = walk_forward_folds(ds, folds, EMBARGO_NS)
    assert len(split) == folds
    tested = np.concatenate([test for _, test in split])
    assert len(np.unique(tested)) == len(tested)  # no row is tested twice
    assert (np.diff(ds.ts[tested]) >= 0).all()  # blocks follow each other in time
    for train, test in split:
        assert len(train) >= MIN_TRAIN_ROWS and len(test) >= MIN_TEST_ROWS
        assert ds.end_ts[train].max() < ds.ts[test].min()  # purged
        assert ds.ts[train].max() < ds.ts[test].min() - EMBARGO_NS  # embargoed


def test_too_many_folds_for_the_data_is_an_error_not_fewer_folds(labelled: dict[str, Dataset]) -> None:
    ds = labelled["5m"]  # a few hundred rows: not enough for 20 test blocks (the most --folds takes)
    with pytest.raises(ValueError, match=r"20 folds need .* use fewer --folds"):
        walk_forward_folds(ds, 20, EMBARGO_NS)


SKILLED = {"mean_log_loss": 0.68, "mean_base_log_loss": 0.70, "auc_interval": {"low": 0.55}}
UNSKILLED = {"mean_log_loss": 0.70, "mean_base_log_loss": 0.70, "auc_interval": {"low": 0.55}}
# beats the base rate's log loss, ranks no better than chance (a noise model on shifted days)
LUCKY = {"mean_log_loss": 0.68, "mean_base_log_loss": 0.70, "auc_interval": {"low": 0.44}}


def test_never_says_so_and_lists_what_the_gate_found() -> None:
    passing = _gate(TrainConfig(promote="never"), SKILLED, [], None)
    assert not passing["promoted"] and passing["reasons"] == ["--promote never"]
    failing = _gate(TrainConfig(promote="never"), UNSKILLED, [], None)
    assert failing["reasons"][0] == "--promote never" and "base rate" in failing["reasons"][1]


def test_the_gate_lists_each_failure() -> None:
    verdict = _gate(TrainConfig(promote="gate"), UNSKILLED, [0.69], "v1")
    assert not verdict["promoted"]
    assert len(verdict["reasons"]) == 2
    assert (
        "base rate's 0.70000" in verdict["reasons"][0] and "active model's 0.69000" in verdict["reasons"][1]
    )
    passed = _gate(TrainConfig(promote="gate"), SKILLED, [0.69], "v1")
    assert passed["promoted"] and passed["reasons"] == [] and passed["gate_failures"] == []


def test_a_model_that_ranks_no_better_than_chance_has_no_skill() -> None:
    verdict = _gate(TrainConfig(promote="gate"), LUCKY, [], None)
    assert not verdict["promoted"] and not verdict["skill"]
    assert verdict["reasons"] == ["AUC's 95% interval over the folds reaches 0.440: no better than chance"]
    one_fold = _gate(
        TrainConfig(promote="gate"), {**SKILLED, "auc_interval": {"low": float("nan")}}, [], None
    )
    assert not one_fold["promoted"]  # no interval: no evidence


def test_force_promotes_and_keeps_the_gates_objections() -> None:
    verdict = _gate(TrainConfig(promote="force"), UNSKILLED, [], None)
    assert verdict["promoted"] and verdict["reasons"] == []
    assert len(verdict["gate_failures"]) == 1 and "base rate" in verdict["gate_failures"][0]

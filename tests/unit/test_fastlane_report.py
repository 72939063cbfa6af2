"""The fast-lane training report, from one real training run on the shipped sample day: a summary
across horizons first, calibration bins and return deciles that count every out-of-fold row, fold
intervals, New York times, and a copy beside the registered model."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from models.fastlane import registry
from tradefleet.cli import app

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample" / "lean"
FOLDS = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`train fastlane` in process: the 15m horizon, four folds, never promoted (about 7 s)."""
    folder = tmp_path_factory.mktemp("fastlane")
    root, report = folder / "registry", folder / "report"
    args = ["train", "fastlane", "--data", str(SAMPLE), "--horizons", "15m", "--folds", str(FOLDS)]
    args += ["--dates", "2013-10-08", "--promote", "never", "--registry", str(root), "--report", str(report)]
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("TRADEFLEET_")]:
            mp.delenv(name)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (version,) = registry.versions(root, "15m")
    return {
        "output": result.output,
        "root": root,
        "report": report,
        "version": version,
        "meta": registry.read_meta(root, "15m", version),
        "json": json.loads((report / "report.json").read_text()),
        "html": (report / "report.html").read_text(),
    }


def test_the_folds_asked_for_are_the_folds_evaluated(trained: dict[str, Any]) -> None:
    assert f"folds={FOLDS}" in trained["output"]
    assert len(trained["meta"]["cv"]["folds"]) == FOLDS and trained["meta"]["cv"]["summary"]["folds"] == FOLDS
    assert [f["fold"] for f in trained["json"]["horizons"][0]["folds"]] == list(range(1, FOLDS + 1))


def test_never_is_the_reason_given(trained: dict[str, Any]) -> None:
    assert "not promoted: --promote never" in trained["output"]
    assert trained["meta"]["promotion"]["reasons"][0] == "--promote never"
    assert registry.active_version(trained["root"], "15m") is None
    assert "not promoted: --promote never" in trained["html"]


def test_the_report_is_saved_beside_the_registered_model(trained: dict[str, Any]) -> None:
    beside = registry.horizon_dir(trained["root"], "15m") / trained["version"]
    for name in ("report.html", "report.json"):
        assert (beside / name).read_bytes() == (trained["report"] / name).read_bytes()


def test_calibration_and_deciles_count_every_out_of_fold_row(trained: dict[str, Any]) -> None:
    horizon = trained["json"]["horizons"][0]
    out_of_fold = sum(f["rows"] for f in horizon["folds"])
    assert out_of_fold > 100
    deciles, calibration = horizon["deciles"], horizon["calibration"]
    assert [d["decile"] for d in deciles] == list(range(1, 11))
    assert sum(d["rows"] for d in deciles) == out_of_fold
    assert sum(b["rows"] for b in calibration) == out_of_fold
    assert all(d["p_low"] <= d["p_high"] for d in deciles)
    assert all(a["p_high"] <= b["p_low"] for a, b in itertools.pairwise(deciles))  # ranked
    for d in deciles:  # a round trip costs at least the 2 x 0.5 bps commission
        assert d["cost_bps"] >= 1.0
        assert d["net_long_bps"] == pytest.approx(d["gross_bps"] - d["cost_bps"])
        assert d["net_short_bps"] == pytest.approx(-d["gross_bps"] - d["cost_bps"])
    for b in calibration:
        assert b["observed_low"] <= b["observed"] <= b["observed_high"]
    # The counts are in the page: one calibration row per bin and one return row per decile.
    assert len(
        re.findall(r"<tr><td>\d+</td><td>\d+</td><td>0\.\d{4}</td><td>0\.\d{4} \[", trained["html"])
    ) == len(calibration)


def test_fold_metrics_carry_intervals(trained: dict[str, Any]) -> None:
    horizon = trained["json"]["horizons"][0]
    for f in horizon["folds"]:
        assert f["auc_low"] <= f["auc"] <= f["auc_high"]
    auc = horizon["summary"]["auc_interval"]
    assert auc["low"] < auc["mean"] < auc["high"]
    assert auc["mean"] == pytest.approx(sum(f["auc"] for f in horizon["folds"]) / FOLDS)


def test_times_are_new_york(trained: dict[str, Any]) -> None:
    horizon = trained["json"]["horizons"][0]
    shown = [*horizon["span"], *(t for f in horizon["folds"] for t in (f["test_start"], f["test_end"]))]
    for stamp in [*shown, *trained["meta"]["data_span"]]:
        moment = dt.datetime.fromisoformat(stamp)
        assert moment.utcoffset() == dt.timedelta(hours=-4), stamp  # EDT on 2013-10-08
        assert dt.time(9, 30) <= moment.time() <= dt.time(16, 0), stamp  # the regular session
    assert all(stamp in trained["html"] for stamp in shown)
    assert trained["json"]["timezone"] == "America/New_York" and "New York time" in trained["html"]


def test_the_page_opens_with_the_summary_and_ends_with_the_configuration(trained: dict[str, Any]) -> None:
    page = trained["html"]
    summary, first_horizon = page.index("<h2>Summary"), page.index("<h2>Horizon")
    assert summary < first_horizon and "<pre>" not in page[:first_horizon]
    table = page[summary:first_horizon]
    assert trained["version"] in table and "AUC [95% CI]" in table and "promoted" in table
    assert page.rindex("<h2>Horizon") < page.index("<details>") and page.rstrip().endswith("</html>")


def test_a_bin_that_is_all_up_or_all_down_has_an_interval_inside_zero_one() -> None:
    """A decile whose rows all went up (or down) is common on short horizons; its Wilson bounds
    must hold the share, or the calibration plot refuses a negative error bar (seen on real data)."""
    from models.fastlane.evaluation import calibration_table

    for rows in (70, 130, 200):  # 7, 13, 20 rows a bin: the first two left a bound outside
        p = np.linspace(0.3, 0.7, rows)
        y = (p > 0.5).astype(float)  # the lowest deciles all 0, the highest all 1
        for row in calibration_table(p, y):
            assert 0.0 <= row["observed_low"] <= row["observed"] <= row["observed_high"] <= 1.0


def test_an_interval_over_few_folds_stays_inside_the_metrics_range() -> None:
    from models.fastlane.evaluation import t_interval

    wide = t_interval([0.05, 0.95, 0.10, 0.90], (0.0, 1.0))  # four scattered fold AUCs
    assert 0.0 <= wide["low"] < wide["mean"] < wide["high"] <= 1.0
    assert t_interval([0.05, 0.95, 0.10, 0.90])["low"] < 0.0  # unbounded it says nonsense


def test_every_shipped_model_has_its_training_report_beside_it() -> None:
    root = Path(__file__).resolve().parents[2] / "models" / "registry" / "fastlane"
    assert sorted(p.name for p in root.iterdir()) == ["10m", "15m", "30m", "5m", "60m"]
    for horizon in ("5m", "10m", "15m", "30m", "60m"):
        version = (root / horizon / "ACTIVE").read_text().strip()
        report = json.loads((root / horizon / version / "report.json").read_text())
        assert version in json.dumps(report)
        assert version in (root / horizon / version / "report.html").read_text()

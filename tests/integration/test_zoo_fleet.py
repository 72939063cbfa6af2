"""The model zoo end to end: trained by `tradefleet train fastlane --families`, served by the fast
lane inside the backtest's fleet (the sequence family reading the one-second vectors it
subscribes to), and ablated family by family on the same folds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from libs.common.config import load_settings
from models.fastlane import registry
from tests.helpers import run_cli
from tests.kit.synthetic import write_days
from tradefleet.backtest import ablation
from tradefleet.backtest.engine import Backtest
from tradefleet.backtest.sources import find_days

DATES = ["2013-10-14", "2013-10-15", "2013-10-16", "2013-10-17"]
SYMBOLS = ["AAA", "BBB"]


def test_a_trained_zoo_trades_a_day_in_the_fleet(tmp_path: Path) -> None:
    data = tmp_path / "lean"
    write_days(data, DATES, edge_bps=4.0)
    root = tmp_path / "registry"
    trained = run_cli(
        *("train", "fastlane", "--data", str(data), "--dates", ",".join(DATES[:3]), "--horizons", "5m"),
        *("--families", "lightgbm,logistic,sequence", "--folds", "3", "--registry", str(root)),
        *("--report", str(tmp_path / "report")),
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr
    assert "PROMOTED" in trained.stdout, trained.stdout  # the planted edge passes the gate
    version = registry.active_version(root, "5m")
    assert version is not None
    folder = registry.horizon_dir(root, "5m") / version
    meta = json.loads((folder / "meta.json").read_text())
    fitted = meta["zoo"]["blend"]["weights"]
    assert set(fitted) == {"lightgbm", "logistic", "sequence"} and abs(sum(fitted.values()) - 1) < 1e-9
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert set(report["horizons"][0]["families"]) == {"lightgbm", "logistic", "sequence"}
    # Every member served, whatever the balancer fitted: the fleet must feed the sequence family.
    meta["zoo"]["blend"]["weights"] = {"lightgbm": 0.4, "logistic": 0.3, "sequence": 0.3}
    (folder / "meta.json").write_text(json.dumps(meta))

    settings = load_settings(
        None,
        qos={"weights": {"5m": 1.0}},
        fastlane={"horizons": ["5m"], "registry": str(root), "compile_cache": str(tmp_path / "cache")},
    )
    days = find_days(str(data), SYMBOLS, DATES[3], DATES[3])
    result = asyncio.run(Backtest(settings, days).run())
    fastlane = result.statuses["fastlane"]
    assert fastlane["models"]["5m"]["engine"] == "zoo(lightgbm:lleaves+logistic:onnx+sequence:onnx)"
    assert fastlane["models"]["5m"]["scored"] == fastlane["predictions"] > 700
    assert fastlane["seconds_in"] > 10_000  # the one-second vectors reached the sequence family
    assert result.ledger.fills, dict(result.ledger.denials)


def test_ablation_takes_out_one_family_at_a_time(tmp_path: Path) -> None:
    data = tmp_path / "lean"
    write_days(data, DATES[:3], edge_bps=4.0)
    settings = load_settings(
        None,
        qos={"weights": {"5m": 1.0}},
        fastlane={"horizons": ["5m"], "families": ["lightgbm", "logistic"]},
    )
    days = find_days(str(data), SYMBOLS, DATES[0], DATES[2])
    out = ablation.run(
        settings, str(data), SYMBOLS, days, tmp_path / "ablate", 2, 1, [], "force", None, 200, 7
    )
    rows = {r["component"]: r for r in out["rows"]}
    assert {"full", "nothing", "family:lightgbm", "family:logistic", "horizon:5m"} == set(rows)
    assert out["reproduced"]
    # each family row traded models trained without it: a registry of its own, a zoo of one
    for family, other in (("lightgbm", "logistic"), ("logistic", "lightgbm")):
        retrained = tmp_path / "ablate" / f"fold-1-without-family-{family}" / "registry"
        version = registry.active_version(retrained, "5m")
        assert version is not None
        meta = registry.read_meta(retrained, "5m", version)
        assert meta["params"]["families"] == [other]
    assert rows["full"]["trades"] > 0

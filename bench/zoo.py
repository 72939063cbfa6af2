"""Fast-lane serving with the model zoo, one row at a time, same run: each family's engine
(LightGBM compiled by lleaves, the logistic regression and the MLP in ONNX Runtime), the whole
horizon blend (every member scored, calibrated and blended by the ZooBalancer: what fastlane calls
per vector), and the single LightGBM scorer served today. The zoo is trained on the shipped sample
day (IBM and BAC, 15m, three folds) into a scratch registry; rows are that day's real vectors.

The budget: seed 002's decision budget is 100 us from tick to decision, so one horizon's blend
must stay well inside it; this reports its p99 against 100 us and against the single model.

``python -m bench.zoo`` writes bench/results/zoo.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, save
from libs.common.config import FeaturesSettings
from models.fastlane import registry
from models.fastlane.dataset import lean_tick_dates, replay_vectors
from models.fastlane.engines import OnnxEngine, load_engine
from models.fastlane.serving import build_scorer
from models.fastlane.train import TrainConfig, train_horizon

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "lean"
DECISION_BUDGET_US = 100.0
HORIZON = "15m"


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.array(samples_ns) / 1000.0
    return {"p50_us": float(np.percentile(arr, 50)), "p99_us": float(np.percentile(arr, 99))}


def _time(call: Any, rows: list[list[float]]) -> dict[str, float]:
    samples = []
    for values in rows:
        t0 = time.perf_counter_ns()
        call(values)
        samples.append(time.perf_counter_ns() - t0)
    return _percentiles(samples)


def _setup(work: Path) -> tuple[Path, dict[str, Any], list[list[float]]]:
    features = FeaturesSettings()
    vectors = list(replay_vectors(SAMPLE, lean_tick_dates(SAMPLE, ["IBM", "BAC"]), features, progress=False))
    cfg = TrainConfig(horizons=[HORIZON], families=["lightgbm", "logistic", "mlp"], folds=3, promote="force")
    out = train_horizon(vectors, list(features.names), features.feature_set, HORIZON, cfg, work)
    folder = registry.horizon_dir(work, HORIZON) / out["version"]
    meta = registry.read_meta(work, HORIZON, out["version"])
    # every member weighted, so the blend timed is the full zoo (a member the balancer zeroes
    # is skipped at serving: this is the worst case)
    families = list(meta["zoo"]["families"])
    meta["zoo"]["blend"]["weights"] = {f: 1.0 / len(families) for f in families}
    return folder, meta, [list(map(float, v.values)) for v in vectors]


def one_round(folder: Path, meta: dict[str, Any], rows: list[list[float]], cache: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    lleaves = load_engine("lleaves", folder, cache)
    out["lightgbm_lleaves"] = _time(lleaves.raw_probability, rows)
    for family in ("logistic", "mlp"):
        engine = OnnxEngine(folder / meta["zoo"]["families"][family]["file"])
        out[f"{family}_onnx"] = _time(engine.raw_probability, rows)
    single, _ = build_scorer({k: v for k, v in meta.items() if k != "zoo"}, folder, "lleaves", cache)
    out["single_model_scorer"] = _time(single.score, rows)
    blend, engine = build_scorer(meta, folder, "auto", cache)
    out["zoo_blend"] = _time(blend.score, rows)
    out["zoo_engine"] = engine
    return out


def run(rounds: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-zoo-") as scratch:
        work = Path(scratch)
        folder, meta, rows = _setup(work)
        per_round = [one_round(folder, meta, rows, work / "cache") for _ in range(rounds)]
    result: dict[str, Any] = {"rounds": per_round, "rows": len(rows), "horizon": HORIZON}
    for key, value in per_round[0].items():
        if isinstance(value, dict):
            result[key] = {q: round(median([r[key][q] for r in per_round]), 2) for q in value}
    result["zoo_engine"] = per_round[0]["zoo_engine"]
    result["decision_budget_us"] = DECISION_BUDGET_US
    result["blend_p99_share_of_budget"] = round(result["zoo_blend"]["p99_us"] / DECISION_BUDGET_US, 3)
    result["blend_over_single_p99"] = round(
        result["zoo_blend"]["p99_us"] / result["single_model_scorer"]["p99_us"], 2
    )
    save("zoo", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "rounds"}, indent=1))

"""Fast-lane serving with the model zoo, one row at a time, same run: each family's engine
(LightGBM compiled by lleaves, the logistic regression, the MLP and the sequence model in ONNX
Runtime; the sequence model's figure includes building its one-second window from the seconds
buffer, as fastlane does), the whole horizon blend (the window built, every member scored,
calibrated and blended by the ZooBalancer: what fastlane does per vector), and the single
LightGBM scorer served today. The zoo is trained on the shipped sample
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
from models.fastlane.engines import OnnxEngine, OnnxWindowEngine, load_engine
from models.fastlane.sequence import NS_PER_S, SECONDS, SecondsBuffer, SequenceWindows
from models.fastlane.serving import build_scorer
from models.fastlane.train import TrainConfig, train_horizon
from proto.features import FeatureVector

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "lean"
DECISION_BUDGET_US = 100.0
HORIZON = "15m"


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    arr = np.array(samples_ns) / 1000.0
    return {"p50_us": float(np.percentile(arr, 50)), "p99_us": float(np.percentile(arr, 99))}


def _time(call: Any, rows: list[Any]) -> dict[str, float]:
    samples = []
    for values in rows:
        t0 = time.perf_counter_ns()
        call(values)
        samples.append(time.perf_counter_ns() - t0)
    return _percentiles(samples)


def _setup(work: Path) -> tuple[Path, dict[str, Any], list[FeatureVector], SecondsBuffer]:
    features = FeaturesSettings()
    windows = SequenceWindows()
    vectors = list(
        replay_vectors(
            SAMPLE, lean_tick_dates(SAMPLE, ["IBM", "BAC"]), features, progress=False, windows=windows
        )
    )
    cfg = TrainConfig(
        horizons=[HORIZON], families=["lightgbm", "logistic", "mlp", "sequence"], folds=3, promote="force"
    )
    out = train_horizon(
        vectors, list(features.names), features.feature_set, HORIZON, cfg, work, None, windows
    )
    folder = registry.horizon_dir(work, HORIZON) / out["version"]
    meta = registry.read_meta(work, HORIZON, out["version"])
    # every member weighted, so the blend timed is the full zoo (a member the balancer zeroes
    # is skipped at serving: this is the worst case)
    families = list(meta["zoo"]["families"])
    meta["zoo"]["blend"]["weights"] = {f: 1.0 / len(families) for f in families}
    # the seconds as fastlane holds them at each bar: the last minute's, per symbol
    seconds = SecondsBuffer()
    for (symbol, t), w in windows.windows.items():
        for k in range(SECONDS):
            if w[k, -1] == 1.0:
                seconds.add(_second(symbol, t - (SECONDS - 1 - k) * NS_PER_S, w[k, :-1].tolist()))
    return folder, meta, vectors, seconds


def _second(symbol: str, ts: int, values: list[float]) -> FeatureVector:
    return FeatureVector(
        ts_event=ts, ts_init=ts, symbol=symbol, timeframe="1s", feature_set="", values=values
    )


def one_round(
    folder: Path, meta: dict[str, Any], vectors: list[FeatureVector], seconds: SecondsBuffer, cache: Path
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = [list(map(float, v.values)) for v in vectors]
    lleaves = load_engine("lleaves", folder, cache)
    out["lightgbm_lleaves"] = _time(lleaves.raw_probability, rows)
    for family in ("logistic", "mlp"):
        engine = OnnxEngine(folder / meta["zoo"]["families"][family]["file"])
        out[f"{family}_onnx"] = _time(engine.raw_probability, rows)
    sequence = OnnxWindowEngine(folder / meta["zoo"]["families"]["sequence"]["file"])
    out["sequence_onnx_with_window"] = _time(
        lambda v: sequence.raw_probability(seconds.window(v.symbol, v.ts_event)), vectors
    )
    single, _ = build_scorer({k: v for k, v in meta.items() if k != "zoo"}, folder, "lleaves", cache)
    out["single_model_scorer"] = _time(single.score, rows)
    blend, engine = build_scorer(meta, folder, "auto", cache)
    out["zoo_blend"] = _time(lambda v: blend.score(v.values, seconds.window(v.symbol, v.ts_event)), vectors)
    out["zoo_engine"] = engine
    trio = {**meta, "zoo": {**meta["zoo"], "blend": {**meta["zoo"]["blend"]}}}
    trio["zoo"]["blend"]["weights"] = {"lightgbm": 1 / 3, "logistic": 1 / 3, "mlp": 1 / 3, "sequence": 0.0}
    without, _ = build_scorer(trio, folder, "auto", cache)
    out["zoo_blend_without_sequence"] = _time(lambda v: without.score(v.values, None), vectors)
    return out


def run(rounds: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-zoo-") as scratch:
        work = Path(scratch)
        folder, meta, vectors, seconds = _setup(work)
        per_round = [one_round(folder, meta, vectors, seconds, work / "cache") for _ in range(rounds)]
    result: dict[str, Any] = {"rounds": per_round, "rows": len(vectors), "horizon": HORIZON}
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

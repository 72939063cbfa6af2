"""The drift monitor per scored vector (models/fastlane/drift.py), same run: comparing like with
like (the shipped reference: the session's parts, independent samples, warm-up per symbol)
against the whole-day comparison it replaced (the same reference stripped to its old form), and
the bare cost of binning one vector value by value (what any monitor must do), and one check
alone (what the vector that triggers it pays, on the decision path, per horizon). Rows: random
vectors of the shipped feature set, a check every 50 as in the service.

``python -m bench.drift`` writes bench/results/drift.json.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import median, save
from libs.common.config import load_settings
from models.fastlane import registry
from models.fastlane.drift import DriftMonitor, _bin

ROWS = 3000
CHECKS = 200


def _setup() -> tuple[dict[str, Any], dict[str, Any], list[list[float]]]:
    settings = load_settings(None)
    root = settings.fastlane.registry
    version = registry.active_version(root, "5m")
    assert version is not None
    meta = registry.read_meta(root, "5m", version)
    ref = meta["drift_reference"]
    old = {
        "features": [{k: f[k] for k in ("name", "edges", "expected", "exempt")} for f in ref["features"]],
        "score_quantiles": ref["score_quantiles"],
    }
    rng = np.random.default_rng(1)
    names = meta["names"]
    rows = []
    for _ in range(ROWS):
        row = rng.normal(size=len(names)).tolist()
        row[names.index("minutes_since_open")] = float(rng.integers(0, 390))
        rows.append(row)
    return ref, old, rows


def one_round(ref: dict[str, Any], old: dict[str, Any], rows: list[list[float]]) -> dict[str, float]:
    out = {}
    for name, reference, warmup in (("like_with_like", ref, 30), ("whole_day", old, 0)):
        monitor = DriftMonitor(reference, window=500, check_every=50, min_samples=500, warmup=warmup)
        t = time.perf_counter()
        for k, row in enumerate(rows):
            monitor.add(row, 0.5, "IBM" if k % 2 else "BAC")
        out[f"{name}_us"] = (time.perf_counter() - t) / len(rows) * 1e6
    features = ref["features"]
    t = time.perf_counter()
    for row in rows:
        [_bin(f["edges"], v) for f, v in zip(features, row, strict=True)]
    out["bare_binning_us"] = (time.perf_counter() - t) / len(rows) * 1e6
    monitor = DriftMonitor(ref, window=500, check_every=50, min_samples=500, warmup=30)
    for k, row in enumerate(rows):
        monitor.add(row, 0.5, "IBM" if k % 2 else "BAC")
    t = time.perf_counter()
    for _ in range(CHECKS):
        monitor.check()
    out["check_us"] = (time.perf_counter() - t) / CHECKS * 1e6
    return out


def run(rounds: int = 5) -> dict[str, Any]:
    ref, old, rows = _setup()
    per_round = [one_round(ref, old, rows) for _ in range(rounds)]
    result: dict[str, Any] = {"rounds": per_round, "rows": ROWS, "features": len(ref["features"])}
    for key in per_round[0]:
        result[key] = round(median([r[key] for r in per_round]), 2)
    result["like_with_like_over_whole_day"] = round(result["like_with_like_us"] / result["whole_day_us"], 2)
    result["like_with_like_over_binning"] = round(result["like_with_like_us"] / result["bare_binning_us"], 2)
    save("drift", result)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps({k: v for k, v in run().items() if k != "rounds"}, indent=1))

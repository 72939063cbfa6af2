"""RL policy inference: the service's whole decision per QOS score (observation from its inputs,
the ONNX actor, the answer event) against the bare ONNX Runtime call on the same graph and input,
and against stable-baselines3's own predict (what serving without it saves).

Target (issue 8): p99 <= 200 us for the policy's inference. Uses the active policy of the shipped
registry. Medians over rounds of per-call percentiles.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, percentile, save
from libs.common.clock import SimClock
from libs.common.config import SHIPPED_REGISTRY
from models.policy import registry
from models.policy.serving import load_active
from proto.features import FeatureVector
from proto.signals import Prediction, QosScore
from services.policy.core import PolicyCore

T0 = 1_381_239_000_000_000_000 + 3600 * 1_000_000_000


def _inputs(core: PolicyCore, n: int) -> list[QosScore]:
    spec = core.obs.spec
    rng = np.random.default_rng(7)
    scores = []
    for i in range(n):
        ts = T0 + i * 60_000_000_000
        core.on_vector(
            FeatureVector(
                ts_event=ts,
                ts_init=ts,
                symbol="IBM",
                timeframe="1m",
                feature_set=spec.feature_set,
                values=rng.normal(size=len(spec.feature_names)).tolist(),
                price=180.0 + rng.normal(),
            )
        )
        for h in spec.horizons:
            s = float(rng.uniform(-1, 1))
            core.on_prediction(
                Prediction(
                    ts_event=ts,
                    ts_init=ts,
                    symbol="IBM",
                    horizon=h,
                    model_version="b",
                    probability=0.5 + s / 10,
                    expected_return=0.0,
                    signal=s,
                    price=180.0,
                )
            )
        q = float(rng.uniform(-1, 1))
        scores.append(
            QosScore(ts_event=ts, ts_init=ts, symbol="IBM", score=q, peak=abs(q), regime="", action="propose")
        )
    return scores


def _timed(fn: Any, items: list[Any]) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter_ns()
        fn(item)
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return out


def run(rounds: int = 3, calls: int = 5_000, root: Path = SHIPPED_REGISTRY) -> dict[str, Any]:
    served = load_active(root)
    if served is None:
        raise SystemExit(f"no active policy in {root}: train one (tradefleet train policy)")
    core = PolicyCore(SimClock(T0), served.spec)
    scores = _inputs(core, 200)
    batch = [scores[i % len(scores)] for i in range(calls)]
    obs_rows = [core.observe(q) for q in scores]
    feed = [{served.input_name: o.reshape(1, -1)} for o in obs_rows]
    feeds = [feed[i % len(feed)] for i in range(calls)]
    sb3: Any = None
    folder = registry.folder(root) / served.version
    try:
        from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: F401

        algo = {"ppo": "PPO", "sac": "SAC", "ddpg": "DDPG"}[served.meta["algorithm"]]
        import stable_baselines3

        sb3 = getattr(stable_baselines3, algo).load(folder / "model.zip", device="cpu")
    except Exception:  # SB3 not installed or no model.zip: that comparison is left out
        sb3 = None

    def decide(q: QosScore) -> None:
        core.answer(q, served.act(core.observe(q)), served.version)

    rows: dict[str, list[tuple[float, float]]] = {"service": [], "bare_onnx": [], "sb3_predict": []}
    for _ in range(rounds):
        for name, fn, items in (
            ("service", decide, batch),
            ("bare_onnx", lambda f: served.session.run(None, f), feeds),
            ("sb3_predict", (lambda o: sb3.predict(o, deterministic=True)) if sb3 else None, obs_rows * 10),
        ):
            if fn is None:
                continue
            fn(items[0])  # warm
            t = _timed(fn, items)
            rows[name].append((percentile(t, 0.5), percentile(t, 0.99)))
    result: dict[str, Any] = {"version": served.version, "calls": calls, "rounds": rounds}
    for name, got in rows.items():
        if got:
            result[name] = {"p50_us": median([g[0] for g in got]), "p99_us": median([g[1] for g in got])}
    result["service_p99_over_bare_p99"] = round(
        result["service"]["p99_us"] / result["bare_onnx"]["p99_us"], 2
    )
    save("policy", result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    ns = parser.parse_args()
    print(run(rounds=ns.rounds))


if __name__ == "__main__":
    main()

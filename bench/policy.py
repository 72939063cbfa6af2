"""RL policy inference: the service's whole decision per QOS score (observation from its inputs,
the actor, the answer event; numpy engine, and ONNX Runtime) and the numpy actor alone, against
the bare ONNX Runtime call on the same graph and input, and stable-baselines3's own predict (what
serving without it saves). Warm (back to back) and cold (32 MB of other data read before each
call: the service's real case, one call a minute per symbol).

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
from models.policy.serving import load_version
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


def _timed(fn: Any, items: list[Any], flush: Any = None) -> list[float]:
    """Per-call microseconds; ``flush`` (untimed) runs before each call to evict the caches: the
    service's real case is one call a minute per symbol, its caches taken by everything else."""
    out = []
    for item in items:
        if flush is not None:
            flush()
        t0 = time.perf_counter_ns()
        fn(item)
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return out


def run(rounds: int = 3, calls: int = 5_000, root: Path = SHIPPED_REGISTRY) -> dict[str, Any]:
    version = registry.active_version(root)
    if version is None:
        raise SystemExit(f"no active policy in {root}: train one (tradefleet train policy)")
    served = load_version(root, version, "numpy")
    onnx = load_version(root, version, "onnx")
    core = PolicyCore(SimClock(T0), served.spec)
    scores = _inputs(core, 200)
    batch = [scores[i % len(scores)] for i in range(calls)]
    obs_rows = [core.observe(q) for q in scores]
    session, input_name = onnx.actor.session, onnx.actor.input_name  # type: ignore[union-attr]
    feed = [{input_name: o.reshape(1, -1)} for o in obs_rows]
    feeds = [feed[i % len(feed)] for i in range(calls)]
    sb3: Any = None
    folder = registry.folder(root) / served.version
    try:
        algo = {"ppo": "PPO", "sac": "SAC", "ddpg": "DDPG"}[served.meta["algorithm"]]
        import stable_baselines3

        sb3 = getattr(stable_baselines3, algo).load(folder / "model.zip", device="cpu")
    except Exception:  # SB3 not installed or no model.zip: that comparison is left out
        sb3 = None

    def decide(q: QosScore) -> None:
        core.answer(q, served.act(core.observe(q)), served.version)

    def decide_onnx(q: QosScore) -> None:
        core.answer(q, onnx.act(core.observe(q)), served.version)

    junk = np.random.default_rng(1).random(4_000_000)
    flush = junk.sum

    rows: dict[str, list[tuple[float, float]]] = {
        k: []
        for k in (
            "service",
            "service_onnx",
            "service_cold",
            "actor_numpy",
            "actor_numpy_cold",
            "bare_onnx",
            "bare_onnx_cold",
            "sb3_predict",
        )
    }
    for _ in range(rounds):
        for name, fn, items in (
            ("service", decide, batch),
            ("service_onnx", decide_onnx, batch),
            ("service_cold", decide, batch[:500]),
            ("actor_numpy", served.act, obs_rows * 25),
            ("actor_numpy_cold", served.act, obs_rows * 2),
            ("bare_onnx", lambda f: session.run(None, f), feeds),
            ("bare_onnx_cold", lambda f: session.run(None, f), feeds[:500]),
            ("sb3_predict", (lambda o: sb3.predict(o, deterministic=True)) if sb3 else None, obs_rows * 10),
        ):
            if fn is None:
                continue
            fn(items[0])  # warm
            t = _timed(fn, items, flush if name.endswith("_cold") else None)
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

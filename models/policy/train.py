"""`tradefleet train policy`: stable-baselines3 on the symbol-day environment, evaluated on days
held back from training, exported to ONNX, registered with its metadata.

1. The learner (PPO by default; SAC or DDPG for the continuous action) trains on vectorized copies
   of the environment (models/policy/env.py) over the training tapes, observations and rewards
   normalized by VecNormalize.
2. A learning curve: every ``eval_every`` steps the deterministic policy plays each held-out tape
   once; the rule-based sizing (QOS alone: every proposal entered at full size) plays the same
   tapes for the line to beat.
3. Export: the actor with the observation normalizer in front, as one ONNX graph; it must
   reproduce stable-baselines3's own deterministic actions on held-out observations (probes,
   kept in the metadata and checked again at every load).
4. The promotion gate: the new policy becomes active only if its held-out reward beats the
   rule-based sizing's on the same tapes (``promote="force"`` activates it anyway, "never" never).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.config import Settings
from libs.common.logging import get_logger
from models.policy import registry
from models.policy.env import RewardConfig, SymbolDayEnv, Tape
from models.shared import code_version

log = get_logger(__name__)
ALGORITHMS = ("ppo", "sac", "ddpg")
PROBES = 32
Actor = Callable[[np.ndarray], np.ndarray]


@dataclass
class PolicyTrainConfig:
    algorithm: str = "ppo"
    timesteps: int = 20_000
    n_envs: int = 4
    subprocess: bool = False  # SubprocVecEnv (one process per env) instead of DummyVecEnv
    seed: int = 7
    risk_penalty: float = 0.5
    learning_rate: float = 3e-4
    net: list[int] = field(default_factory=lambda: [64, 64])
    n_steps: int = 128  # PPO: steps per env per rollout
    batch_size: int = 64
    gamma: float = 0.99
    ent_coef: float = 0.0
    eval_every: int = 0  # steps between learning-curve points; 0: a tenth of the budget
    promote: str = "gate"  # "gate", "force" or "never"

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, not {self.algorithm!r}")
        if self.promote not in ("gate", "force", "never"):
            raise ValueError(f"promote must be gate, force or never, not {self.promote!r}")


def rules_actor(_obs: np.ndarray) -> np.ndarray:
    """The rule-based sizing as an actor: every proposal entered at QOS's full size."""
    return np.array([1.0, 1.0], dtype=np.float32)


def play(env: SymbolDayEnv, actor: Actor, tapes: range | list[int]) -> list[dict[str, Any]]:
    """Each tape once with a deterministic actor: reward, P&L and entries per tape."""
    rows = []
    for index in tapes:
        try:
            obs, info = env.reset(options={"tape": index})
        except ValueError:  # no proposal on that tape: nothing to decide, nothing to score
            rows.append(
                {"tape": env.tapes[index].name, "reward": 0.0, "pnl_bps": 0.0, "decisions": 0, "entries": 0}
            )
            continue
        total, done = 0.0, False
        while not done:
            action = actor(obs)
            obs, reward, done, _, info = env.step(action)
            total += reward
        rows.append(
            {
                "tape": info["tape"],
                "reward": round(total, 3),
                "pnl_bps": round(info["equity_bps"], 3),
                "decisions": info["decisions"],
                "entries": int(info["qos"].get("entries_by_policy", 0)),
            }
        )
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "mean_reward": round(float(np.mean([r["reward"] for r in rows])), 3) if rows else 0.0,
        "total_pnl_bps": round(float(np.sum([r["pnl_bps"] for r in rows])), 3),
        "entries": int(np.sum([r["entries"] for r in rows])),
    }


class _Learner:
    """The SB3 model and its normalizer, with a deterministic actor for evaluation."""

    def __init__(self, cfg: PolicyTrainConfig, make_env: Callable[[], Any]) -> None:
        from stable_baselines3 import DDPG, PPO, SAC
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.noise import NormalActionNoise
        from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

        vec_cls = SubprocVecEnv if cfg.subprocess else DummyVecEnv
        venv = make_vec_env(make_env, n_envs=cfg.n_envs, seed=cfg.seed, vec_env_cls=vec_cls)
        self.venv = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0, gamma=cfg.gamma)
        kwargs: dict[str, Any] = {
            "learning_rate": cfg.learning_rate,
            "gamma": cfg.gamma,
            "seed": cfg.seed,
            "device": "cpu",
            "verbose": 0,
            "policy_kwargs": {"net_arch": list(cfg.net)},
        }
        if cfg.algorithm == "ppo":
            self.model: Any = PPO(
                "MlpPolicy",
                self.venv,
                n_steps=cfg.n_steps,
                batch_size=cfg.batch_size,
                ent_coef=cfg.ent_coef,
                **kwargs,
            )
        else:
            noise = NormalActionNoise(np.zeros(2), np.full(2, 0.2))
            algo = SAC if cfg.algorithm == "sac" else DDPG
            self.model = algo(
                "MlpPolicy",
                self.venv,
                batch_size=cfg.batch_size,
                learning_starts=min(1000, cfg.timesteps // 5),
                action_noise=noise if cfg.algorithm == "ddpg" else None,
                **kwargs,
            )

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(self.venv.normalize_obs(obs), dtype=np.float32)

    def actor(self, obs: np.ndarray) -> np.ndarray:
        action, _ = self.model.predict(self.normalize(obs[None, :]), deterministic=True)
        return np.asarray(action[0], dtype=np.float32)


def export_onnx(learner: _Learner, path: Path) -> None:
    """The normalizer and the deterministic actor as one graph: obs (n, size) -> action (n, 2)."""
    import torch

    rms: Any = learner.venv.obs_rms  # one RunningMeanStd for a Box observation
    clip, eps = learner.venv.clip_obs, learner.venv.epsilon
    policy = learner.model.policy
    low = torch.as_tensor(policy.action_space.low, dtype=torch.float32)
    high = torch.as_tensor(policy.action_space.high, dtype=torch.float32)

    class Actor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy
            self.mean = torch.nn.Buffer(torch.as_tensor(rms.mean, dtype=torch.float32))
            self.std = torch.nn.Buffer(torch.as_tensor(np.sqrt(rms.var + eps), dtype=torch.float32))

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            x = torch.clamp((obs - self.mean) / self.std, -clip, clip)
            action = self.policy._predict(x, deterministic=True)
            if self.policy.squash_output:
                action = low + 0.5 * (action + 1.0) * (high - low)
            return torch.clamp(action, low, high)

    actor = Actor().eval()
    size = policy.observation_space.shape[0]
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter: the dynamo one needs onnxscript, and an MLP needs neither.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            actor,
            (torch.zeros(1, size),),
            str(path),
            dynamo=False,
            input_names=["obs"],
            output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
            opset_version=17,
        )


def actor_layers(learner: _Learner) -> tuple[list[Any], bool]:
    """The deterministic actor as its plain layers (Linear / Tanh / ReLU modules, in order) and
    whether its output is tanh-squashed into the action space (SAC, DDPG) or clipped (PPO)."""
    import torch

    policy = learner.model.policy
    if hasattr(policy, "mlp_extractor"):  # PPO: policy_net then action_net; the mean is the action
        return [*policy.mlp_extractor.policy_net, policy.action_net], False
    actor = policy.actor
    if hasattr(actor, "latent_pi"):  # SAC: latent_pi, mu, then tanh
        return [*actor.latent_pi, actor.mu, torch.nn.Tanh()], True
    return list(actor.mu), True  # DDPG/TD3: mu ends in tanh


def export_numpy(learner: _Learner, path: Path) -> None:
    """The same actor as arrays for the numpy engine (serving.NumpyActor): the hot path's engine.
    An MLP this small is a few matrix-vector products; ONNX Runtime's per-call overhead dominates
    it, and the policy answers rarely enough that every call is a cold one (measured in
    bench/policy.py)."""
    import torch

    layers, squash = actor_layers(learner)
    arrays: dict[str, Any] = {}
    kinds = []
    for i, layer in enumerate(layers):
        if isinstance(layer, torch.nn.Linear):
            arrays[f"w{i}"] = layer.weight.detach().cpu().numpy().astype(np.float32)
            arrays[f"b{i}"] = layer.bias.detach().cpu().numpy().astype(np.float32)
            kinds.append("linear")
        elif isinstance(layer, torch.nn.Tanh | torch.nn.ReLU):
            kinds.append("tanh" if isinstance(layer, torch.nn.Tanh) else "relu")
        else:
            raise TypeError(f"the numpy engine does not know layer {layer!r}")
    rms: Any = learner.venv.obs_rms
    space = learner.model.policy.action_space
    arrays |= {
        "kinds": np.array(kinds),
        "squash": np.array(squash),
        "mean": rms.mean.astype(np.float32),
        "std": np.sqrt(rms.var + learner.venv.epsilon).astype(np.float32),
        "clip": np.array(learner.venv.clip_obs, dtype=np.float32),
        "low": space.low.astype(np.float32),
        "high": space.high.astype(np.float32),
    }
    np.savez(path, **arrays)


def _probe_observations(env: SymbolDayEnv, tapes: list[int], limit: int) -> np.ndarray:
    seen: list[np.ndarray] = []
    for index in tapes:
        try:
            obs, _ = env.reset(options={"tape": index})
        except ValueError:
            continue
        done = False
        while not done and len(seen) < limit:
            seen.append(obs)
            obs, _, done, _, _ = env.step(rules_actor(obs))
        if len(seen) >= limit:
            break
    return np.stack(seen) if seen else np.zeros((0, env.obs_spec.size), dtype=np.float32)


def train(
    train_tapes: list[Tape],
    eval_tapes: list[Tape],
    settings: Settings,
    cfg: PolicyTrainConfig,
    registry_root: Path,
    report_dir: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.monitor import Monitor

    from models.policy import report
    from models.policy.serving import ENGINES, load_version

    if not train_tapes or not eval_tapes:
        raise ValueError("training needs tapes to train on and held-back tapes to evaluate on")
    started = time.monotonic()
    reward = RewardConfig(risk_penalty=cfg.risk_penalty)

    def make_env() -> Any:
        return Monitor(SymbolDayEnv(train_tapes, settings, reward))

    learner = _Learner(cfg, make_env)
    eval_env = SymbolDayEnv(eval_tapes, settings, reward)
    held_out = list(range(len(eval_tapes)))
    rules_rows = play(eval_env, rules_actor, held_out)
    rules = _summary(rules_rows)
    curve: list[dict[str, Any]] = []
    every = cfg.eval_every or max(cfg.timesteps // 10, 1)

    class Curve(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_at = 0

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_at:
                self.next_at += every
                episodes = [e["r"] for e in self.model.ep_info_buffer or ()]
                curve.append(
                    {
                        "timesteps": int(self.num_timesteps),
                        "train_reward": round(float(np.mean(episodes)), 3) if episodes else None,
                        "train_episodes": len(episodes),
                        "held_out_reward": _summary(play(eval_env, learner.actor, held_out))["mean_reward"],
                    }
                )
            return True

    callback = Curve()
    learner.model.learn(total_timesteps=cfg.timesteps, callback=callback, progress_bar=progress)
    policy_rows = play(eval_env, learner.actor, held_out)
    result = _summary(policy_rows)
    curve.append(
        {
            "timesteps": int(learner.model.num_timesteps),
            "train_reward": round(float(np.mean([e["r"] for e in learner.model.ep_info_buffer])), 3)
            if learner.model.ep_info_buffer
            else None,
            "train_episodes": len(learner.model.ep_info_buffer),
            "held_out_reward": result["mean_reward"],
        }
    )

    version = _version(cfg, train_tapes)
    folder = registry.folder(registry_root) / version
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(learner, folder / "policy.onnx")
    export_numpy(learner, folder / "actor.npz")
    probes = _probe_observations(eval_env, held_out, PROBES)
    expected = np.stack([learner.actor(o) for o in probes]) if len(probes) else np.zeros((0, 2))
    learner.model.save(folder / "model.zip")
    learner.venv.save(str(folder / "vecnormalize.pkl"))
    eval_env.close()
    learner.venv.close()
    beats = result["mean_reward"] > rules["mean_reward"]
    meta = {
        "version": version,
        "kind": "policy",
        "algorithm": cfg.algorithm,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "config": asdict(cfg),
        "observation": eval_env.obs_spec.to_meta(),
        "action": {
            "space": "Box([0, 0], [1, 1])",
            "meaning": ["scale of QOS's order size", "enter if >= 0.5"],
        },
        "reward": {"units": "bps of qos.order_notional", "risk_penalty": cfg.risk_penalty},
        "train_tapes": [t.name for t in train_tapes],
        "held_out_tapes": [t.name for t in eval_tapes],
        "evaluation": {
            "policy": result,
            "rules": rules,
            "per_tape": {"policy": policy_rows, "rules": rules_rows},
        },
        "learning_curve": curve,
        "probes": {"obs": probes.tolist(), "actions": expected.tolist()},
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    # Each engine must reproduce SB3's actions on the probes, or loading raises.
    meta["inference_us"] = {
        engine: _time_inference(load_version(registry_root, version, engine), probes) for engine in ENGINES
    }
    promoted = cfg.promote == "force" or (cfg.promote == "gate" and beats)
    why = (
        "forced"
        if cfg.promote == "force"
        else "not asked"
        if cfg.promote == "never"
        else f"held-out mean reward {result['mean_reward']} vs rules {rules['mean_reward']}"
    )
    meta["promotion"] = {"promoted": promoted, "why": why}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    if promoted:  # only once its metadata is complete: a reader never sees a half-written version
        registry.activate(registry_root, version)
    html = report.write(report_dir or folder, meta)
    if report_dir is not None and report_dir != folder:
        report.write(folder, meta)
    return {"version": version, "folder": str(folder), "report_html": str(html), **meta}


def _time_inference(served: Any, probes: np.ndarray, rounds: int = 2000) -> dict[str, float]:
    if not len(probes):
        return {}
    timings = np.empty(rounds)
    for i in range(rounds):
        obs = probes[i % len(probes)]
        t0 = time.perf_counter_ns()
        served.act(obs)
        timings[i] = time.perf_counter_ns() - t0
    return {
        "p50": round(float(np.percentile(timings, 50)) / 1e3, 1),
        "p99": round(float(np.percentile(timings, 99)) / 1e3, 1),
    }


def _version(cfg: PolicyTrainConfig, tapes: list[Tape]) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    digest = hashlib.sha256(json.dumps([asdict(cfg), [t.name for t in tapes]]).encode()).hexdigest()[:8]
    return f"{stamp}-{cfg.algorithm}-{digest}"

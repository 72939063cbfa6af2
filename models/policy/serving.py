"""Serving a trained policy without stable-baselines3 or torch: its exported actor, in ONNX
Runtime or (the default, faster for one cold row) as numpy matrix-vector products.

The exported graph maps an observation (the layout in models/policy/observation.py) to the
deterministic action [scale, timing] in [0, 1]^2; the observation normalizer learned in training
is part of the graph. At load the graph must reproduce the probe actions recorded at export (the
same check the sentiment model passes): a policy that does not is refused, and the service keeps
the one it has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from models.policy import registry
from models.policy.observation import ObservationSpec

PROBE_TOLERANCE = 1e-4
Timing = Literal["enter", "wait"]


class PolicyRefused(RuntimeError):
    pass


def decode_action(action: np.ndarray) -> tuple[float, Timing]:
    """The action space's meaning, shared by the environment and the service: component 0 is the
    size scale (clipped to [0, 1]), component 1 enters at >= 0.5 and waits below."""
    scale = float(min(1.0, max(0.0, float(action[0]))))
    return scale, "enter" if float(action[1]) >= 0.5 else "wait"


class OnnxActor:
    """The exported graph in ONNX Runtime: the portable artifact (any ONNX runtime can serve it)."""

    name = "onnx"

    def __init__(self, path: Path) -> None:
        self.session = onnx_session(path)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: obs.reshape(1, -1).astype(np.float32, copy=False)})
        return np.asarray(out[0][0])


class NumpyActor:
    """The same actor as a few numpy matrix-vector products (actor.npz, written beside the ONNX
    graph). Our own because the hot path demands it: the policy answers about once a minute per
    symbol, so every call is a cold one, and ONNX Runtime's per-call overhead then costs several
    times the arithmetic (bench/policy.py). Held to the same probes as the graph."""

    name = "numpy"

    def __init__(self, path: Path) -> None:
        with np.load(path) as z:
            self.mean, self.std, self.clip = z["mean"], z["std"], float(z["clip"])
            self.low, self.high, self.squash = z["low"], z["high"], bool(z["squash"])
            self.layers: list[tuple[str, np.ndarray | None, np.ndarray | None]] = []
            for i, kind in enumerate(z["kinds"].tolist()):
                if kind == "linear":
                    self.layers.append((kind, np.ascontiguousarray(z[f"w{i}"].T), z[f"b{i}"]))
                else:
                    self.layers.append((kind, None, None))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = np.clip((obs.astype(np.float32, copy=False) - self.mean) / self.std, -self.clip, self.clip)
        for kind, w, b in self.layers:
            if w is not None:
                x = x @ w + b
            elif kind == "tanh":
                x = np.tanh(x)
            else:
                x = np.maximum(x, 0.0)
        if self.squash:
            x = self.low + 0.5 * (x + 1.0) * (self.high - self.low)
        return np.clip(x, self.low, self.high)


ENGINES: dict[str, tuple[type[OnnxActor] | type[NumpyActor], str]] = {
    "numpy": (NumpyActor, "actor.npz"),
    "onnx": (OnnxActor, "policy.onnx"),
}


@dataclass
class ServedPolicy:
    version: str
    spec: ObservationSpec
    actor: OnnxActor | NumpyActor
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def engine(self) -> str:
        return self.actor.name

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.actor(obs)


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One row per call: threads would only add wake-up latency.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_version(root: Path, version: str, engine: str = "auto") -> ServedPolicy:
    """``auto``: the numpy engine where the version has one, else ONNX Runtime."""
    meta = registry.read_meta(root, version)
    folder = registry.folder(root) / version
    if engine == "auto":
        engine = "numpy" if (folder / ENGINES["numpy"][1]).exists() else "onnx"
    if engine not in ENGINES:
        raise PolicyRefused(f"unknown policy engine {engine!r}; known: auto, {', '.join(ENGINES)}")
    kind, filename = ENGINES[engine]
    policy = ServedPolicy(
        version=version,
        spec=ObservationSpec.from_meta(meta["observation"]),
        actor=kind(folder / filename),
        meta=meta,
    )
    probes = meta.get("probes") or {}
    obs, expected = np.asarray(probes.get("obs", []), np.float32), np.asarray(probes.get("actions", []))
    if not len(obs):
        raise PolicyRefused(f"policy {version} has no probes in its metadata: cannot check its export")
    got = np.stack([policy.act(o) for o in obs])
    worst = float(np.max(np.abs(got - expected)))
    if worst > PROBE_TOLERANCE:
        raise PolicyRefused(f"policy {version} ({engine}): misses its probe actions by {worst:.2e}")
    return policy


def load_active(root: Path, engine: str = "auto") -> ServedPolicy | None:
    version = registry.active_version(root)
    return None if version is None else load_version(root, version, engine)

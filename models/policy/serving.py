"""Serving a trained policy without stable-baselines3 or torch: its ONNX actor in ONNX Runtime.

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


@dataclass
class ServedPolicy:
    version: str
    spec: ObservationSpec
    session: Any
    input_name: str
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    def act(self, obs: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: obs.reshape(1, -1).astype(np.float32, copy=False)})
        return np.asarray(out[0][0])


def onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One row per call: threads would only add wake-up latency.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_version(root: Path, version: str) -> ServedPolicy:
    meta = registry.read_meta(root, version)
    session = onnx_session(registry.folder(root) / version / "policy.onnx")
    policy = ServedPolicy(
        version=version,
        spec=ObservationSpec.from_meta(meta["observation"]),
        session=session,
        input_name=session.get_inputs()[0].name,
        meta=meta,
    )
    probes = meta.get("probes") or {}
    obs, expected = np.asarray(probes.get("obs", []), np.float32), np.asarray(probes.get("actions", []))
    if not len(obs):
        raise PolicyRefused(f"policy {version} has no probes in its metadata: cannot check its export")
    got = np.stack([policy.act(o) for o in obs])
    worst = float(np.max(np.abs(got - expected)))
    if worst > PROBE_TOLERANCE:
        raise PolicyRefused(f"policy {version}: the ONNX graph misses its probe actions by {worst:.2e}")
    return policy


def load_active(root: Path) -> ServedPolicy | None:
    version = registry.active_version(root)
    return None if version is None else load_version(root, version)

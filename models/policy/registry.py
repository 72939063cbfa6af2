"""The policy registry: one folder of versions beside the other model kinds.

policy/<version>/policy.onnx   the deterministic actor with its observation normalizer
policy/<version>/model.zip     the stable-baselines3 model (to continue training; not served)
policy/<version>/meta.json     algorithm, observation layout, data span, evaluation, probes
policy/<version>/report.html   learning curve and held-out evaluation
policy/ACTIVE                  the served version (replaced atomically)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.shared import activate_in, active_in, read_meta_in

KIND = "policy"


def folder(root: Path) -> Path:
    return Path(root) / KIND


def versions(root: Path) -> list[str]:
    base = folder(root)
    return sorted(p.name for p in base.iterdir() if (p / "meta.json").exists()) if base.exists() else []


def active_version(root: Path) -> str | None:
    return active_in(folder(root))


def read_meta(root: Path, version: str) -> dict[str, Any]:
    return read_meta_in(folder(root), version)


def activate(root: Path, version: str) -> None:
    activate_in(folder(root), version)

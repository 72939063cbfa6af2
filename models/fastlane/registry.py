"""The model registry: versioned artifacts with metadata, and one active version per horizon.

Layout under the registry root (``models/registry`` by default):

    fastlane/<horizon>/<version>/model.txt    LightGBM text model (the reference)
    fastlane/<horizon>/<version>/model.onnx   the same model for ONNX Runtime
    fastlane/<horizon>/<version>/meta.json    feature set, data span, metrics, calibration,
                                              drift reference, engine timings, code version
    fastlane/<horizon>/<version>/report.html  the training run's report (and report.json): every
                                              horizon it trained, this one among them
    fastlane/<horizon>/ACTIVE                 the active version (replaced atomically)
    fastlane/<horizon>/.staging-*             a version being written (renamed into place whole)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.shared import activate_in, active_in, code_version, read_meta_in

__all__ = ["activate", "active_version", "code_version", "horizon_dir", "read_meta", "versions"]

KIND = "fastlane"
# a version being written (train.py stages it here and renames it into place): not a version yet
STAGING_PREFIX = ".staging-"


def horizon_dir(root: Path, horizon: str) -> Path:
    return Path(root) / KIND / horizon


def versions(root: Path, horizon: str) -> list[str]:
    folder = horizon_dir(root, horizon)
    if not folder.exists():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(STAGING_PREFIX) and (p / "meta.json").exists()
    )


def active_version(root: Path, horizon: str) -> str | None:
    return active_in(horizon_dir(root, horizon))


def read_meta(root: Path, horizon: str, version: str) -> dict[str, Any]:
    return read_meta_in(horizon_dir(root, horizon), version)


def activate(root: Path, horizon: str, version: str) -> None:
    activate_in(horizon_dir(root, horizon), version)

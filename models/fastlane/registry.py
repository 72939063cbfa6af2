"""The model registry: versioned artifacts with metadata, and one active version per horizon.

Layout under the registry root (``models/registry`` by default):

    fastlane/<horizon>/<version>/model.txt    LightGBM text model (the reference)
    fastlane/<horizon>/<version>/model.onnx   the same model for ONNX Runtime
    fastlane/<horizon>/<version>/meta.json    feature set, data span, metrics, calibration,
                                              drift reference, engine timings, code version
    fastlane/<horizon>/ACTIVE                 the active version (replaced atomically)
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

KIND = "fastlane"


def horizon_dir(root: Path, horizon: str) -> Path:
    return Path(root) / KIND / horizon


def versions(root: Path, horizon: str) -> list[str]:
    folder = horizon_dir(root, horizon)
    return sorted(p.name for p in folder.iterdir() if (p / "meta.json").exists()) if folder.exists() else []


def active_version(root: Path, horizon: str) -> str | None:
    marker = horizon_dir(root, horizon) / "ACTIVE"
    try:
        version = marker.read_text().strip()
    except FileNotFoundError:
        return None
    return version if (horizon_dir(root, horizon) / version / "meta.json").exists() else None


def read_meta(root: Path, horizon: str, version: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((horizon_dir(root, horizon) / version / "meta.json").read_text())
    return meta


def activate(root: Path, horizon: str, version: str) -> None:
    """Atomic: a reader sees the old version or the new one, never a half-written marker."""
    folder = horizon_dir(root, horizon)
    if not (folder / version / "meta.json").exists():
        raise FileNotFoundError(f"no registered version {version} for horizon {horizon}")
    tmp = folder / f".ACTIVE.{os.getpid()}"
    tmp.write_text(version + "\n")
    os.replace(tmp, folder / "ACTIVE")


def code_version() -> str:
    """git describe of the working tree when there is one (with -dirty), else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"tradefleet-{version('tradefleet')}"
        except PackageNotFoundError:
            return "unknown"

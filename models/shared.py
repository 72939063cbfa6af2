"""What every model kind's registry shares: a folder of versions, each with meta.json, and an
``ACTIVE`` marker naming the served one (replaced atomically); the code version a model records;
report plots inlined as PNG or SVG. The kinds lay their folders out themselves (fastlane per horizon,
sentiment one folder)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any


def active_in(folder: Path) -> str | None:
    """The version ``folder/ACTIVE`` names, when that version is registered (has meta.json)."""
    try:
        version = (folder / "ACTIVE").read_text().strip()
    except FileNotFoundError:
        return None
    return version if (folder / version / "meta.json").exists() else None


def read_meta_in(folder: Path, version: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((folder / version / "meta.json").read_text())
    return meta


def activate_in(folder: Path, version: str) -> None:
    """Atomic: a reader sees the old version or the new one, never a half-written marker."""
    if not (folder / version / "meta.json").exists():
        raise FileNotFoundError(f"no registered version {version} in {folder}")
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


def png(fig: Any) -> str:
    """A matplotlib figure as a data: URI (reports are single self-contained files)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG markup (set ``svg.fonttype: none`` to keep text as text)."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: invalid inside HTML

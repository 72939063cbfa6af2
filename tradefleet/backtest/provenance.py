"""Where a backtest's numbers came from: the code (git commit), the configuration (a hash of the
effective settings, secrets masked), the models that traded (with the time each was quarantined,
if it was), the data's span and the cost model the fills paid."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from libs.common.config import Settings
from libs.common.secrets import MASK, mask_url
from tradefleet.backtest.analysis import ny_time
from tradefleet.backtest.engine import BacktestResult

REPO = Path(__file__).resolve().parents[2]
SECRET_KEYS = re.compile(r"password|passwd|secret|token|api_key|apikey|credential", re.IGNORECASE)
# Paths the backtest makes for each run (its own journal in a temporary folder): not configuration.
PER_RUN = (("execution", "journal"),)


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """HEAD and whether tracked files differ from it; "unknown" outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    if head.returncode != 0:
        return {"commit": "unknown", "dirty": None}
    return {
        "commit": head.stdout.strip(),
        "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
    }


def masked(value: Any, key: str = "") -> Any:
    """Settings as plain data with every secret masked: secret-named keys that hold something,
    and passwords inside URLs (SecretStr fields are dumped masked by pydantic already)."""
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str):
        return MASK if value and SECRET_KEYS.search(key) else mask_url(value)
    return value


def settings_digest(settings: Settings) -> tuple[str, dict[str, Any]]:
    """(sha256 of the effective settings as stable JSON, the masked settings hashed)."""
    plain = masked(settings.model_dump(mode="json"))
    for section, key in PER_RUN:
        plain.get(section, {}).pop(key, None)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest(), plain


def models(result: BacktestResult, quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    """Each fast-lane horizon's model (version, engine, when it was quarantined), the policy's
    and the sentiment model's versions."""
    when = {(q["horizon"], q["version"]): q["time"] for q in quarantined}
    fastlane = {}
    for horizon, m in ((result.statuses.get("fastlane") or {}).get("models") or {}).items():
        fastlane[horizon] = {
            "version": m.get("version"),
            "engine": m.get("engine"),
            "scored": m.get("scored"),
            "quarantined": bool(m.get("quarantined")),
            "quarantined_at": when.get((horizon, m.get("version"))),
        }
    policy = result.statuses.get("policy")
    sentiment = result.statuses.get("sentiment")
    return {
        "fastlane": fastlane,
        "policy": policy.get("version") if policy else None,
        "sentiment": sentiment.get("version") if sentiment else None,
    }


def cost_model(settings: Settings) -> dict[str, Any]:
    ex = settings.execution
    return {
        "venue": "SimBroker (fills from the recorded quotes and trades)",
        "commission": ex.sim.commission,
        "submit_latency_ms": ex.sim.submit_latency_ms,
        "report_latency_ms": ex.sim.report_latency_ms,
        "queue_ahead_fraction": ex.sim.queue_ahead_fraction,
        "tactic": ex.tactic_style,
        "slippage": "not a fixed charge: orders cross the recorded spread and walk the displayed size "
        "(one tick worse per further touch size); slippage is measured against the arrival mid",
        "baselines": "trade at the minute's touch (mid -/+ half spread) with the same commission model",
    }


def provenance(result: BacktestResult, data: str, quarantined: list[dict[str, Any]]) -> dict[str, Any]:
    settings = result.ledger.settings
    digest, _ = settings_digest(settings)
    minutes = result.ledger.minutes
    span = {
        "days": result.days,
        "first_minute": ny_time(minutes[0].ts - 60_000_000_000) if minutes else None,
        "last_minute": ny_time(minutes[-1].ts) if minutes else None,
        "timezone": "America/New_York",
        "source": mask_url(data),
    }
    return {
        **git_commit(),
        "config_sha256": digest,
        "models": models(result, quarantined),
        "data": span,
        "costs": cost_model(settings),
    }

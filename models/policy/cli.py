"""The body of `tradefleet train policy` (kept out of the CLI module so it imports lazily)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from libs.common.config import Settings
from models.policy.env import record_tapes
from models.policy.train import PolicyTrainConfig, train


def run(
    settings: Settings,
    days: list[Any],
    eval_dates: set[str],
    news: list[Path],
    sentiment: bool,
    cfg: PolicyTrainConfig,
    registry_root: Path,
    report_dir: Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Record every day's tapes through the upstream services, then train on the days not held
    back and evaluate on the rest."""
    tapes = record_tapes(settings, days, news, sentiment, progress)
    train_tapes = [t for t in tapes if t.date not in eval_dates]
    eval_tapes = [t for t in tapes if t.date in eval_dates]
    if not train_tapes:
        raise ValueError("no symbol-day left to train on once the held-back days are taken out")
    if not eval_tapes:
        raise ValueError(f"no data on the held-back days {sorted(eval_dates)}")
    if report_dir is None:
        report_dir = Path("var/reports") / f"policy-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    return train(train_tapes, eval_tapes, settings, cfg, registry_root, report_dir, progress)

"""Rebuild the drift reference of registered fast-lane versions from the days they were trained
on (``--dates``, or the days a reference names; the version's ``symbols``), as training now builds
it (models/fastlane/drift.py: every vector of those days, by part of the session, with each
feature's independent-sample rate).
The model itself is untouched; only ``drift_reference`` in its meta.json changes.

    python -m models.fastlane.refresh_drift --data ../shared/data/market/lean \
        --dates 2013-10-07,2013-10-09 [--registry DIR] [--horizons 5m,15m]

A version trained before this kind of reference otherwise keeps the old, whole-day comparison,
which quarantined the shipped models on days they were trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.calendar import market_calendar
from libs.common.config import Settings, load_settings
from models.fastlane import drift, registry
from models.fastlane.dataset import vectors_of_days
from models.fastlane.engines import Scorer, load_best_engine


def refresh(
    settings: Settings, root: Path, horizon: str, version: str, data: str, dates: list[str] | None = None
) -> dict[str, Any]:
    """``dates`` (YYYY-MM-DD): the days the version was trained on; default: those its reference
    names. The span alone does not say (a day inside it may have been held out)."""
    from tradefleet.backtest.sources import find_days

    meta = registry.read_meta(root, horizon, version)
    wanted = sorted(dates or meta["drift_reference"].get("days") or [])
    if not wanted:
        raise ValueError(f"{horizon} {version}: say which days it was trained on (--dates)")
    days = [
        d
        for d in find_days(data, list(meta["symbols"]), wanted[0], wanted[-1])
        if f"{d.date[:4]}-{d.date[4:6]}-{d.date[6:]}" in wanted
    ]
    if len(days) != len(wanted):
        raise ValueError(f"{horizon} {version}: data for {meta['symbols']} on {wanted} is not all in {data}")
    calendar = market_calendar(settings.market)
    sessions = ((d.session(calendar), d.records()) for d in days)
    vectors = [
        v
        for v in vectors_of_days(sessions, settings.features, meta.get("timeframe", "1m"), calendar=calendar)
        if v.feature_set == meta["feature_set"]
    ]
    engine = load_best_engine(
        meta.get("engine_order", ["lleaves", "onnx"]),
        registry.horizon_dir(root, horizon) / version,
        settings.fastlane.compile_cache,
    )
    cal = meta["calibration"]
    scorer = Scorer(engine, cal["platt_a"], cal["platt_b"], cal["up_mean"], cal["down_mean"])
    X = np.array([v.values for v in vectors], dtype=float)
    scores = np.array([scorer.score(v.values)[0] for v in vectors])
    meta["drift_reference"] = drift.reference(
        X, scores, list(meta["names"]), np.array([v.symbol for v in vectors]), wanted
    )
    path = registry.horizon_dir(root, horizon) / version / "meta.json"
    path.write_text(json.dumps(meta, indent=1, allow_nan=True))  # as training writes it
    return {"horizon": horizon, "version": version, "vectors": len(vectors), "days": [d.date for d in days]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="the LEAN folder (or database URL) the versions were trained on"
    )
    parser.add_argument("--registry", type=Path, default=None, help="default: fastlane.registry")
    parser.add_argument(
        "--horizons", default=None, help="comma-separated (default: every horizon with an active version)"
    )
    parser.add_argument(
        "--dates", default=None, help="YYYY-MM-DD,...: the days trained on (default: as recorded)"
    )
    args = parser.parse_args()
    settings = load_settings(None)
    root = args.registry or settings.fastlane.registry
    horizons = args.horizons.split(",") if args.horizons else list(settings.fastlane.horizons)
    for horizon in horizons:
        version = registry.active_version(root, horizon)
        if version is None:
            print(f"{horizon}: no active version")
            continue
        dates = args.dates.split(",") if args.dates else None
        print(json.dumps(refresh(settings, root, horizon, version, args.data, dates)))


if __name__ == "__main__":
    main()

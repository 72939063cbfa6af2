"""Walk-forward: train the fast lane on window k, backtest window k+1 with what training promoted,
roll by the test window; a report per fold and one over every test window.

Each fold trains into its own registry (FOLD/registry) from the same cores the fleet runs (the
days replayed through the md-gateway and features cores, from LEAN files or the database), with
the production promotion gate unless told otherwise: a horizon whose model does not beat the base
rate is not promoted, and the fold then trades without it, as the fleet would. Nothing of the test
window is seen in training.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.calendar import market_calendar
from libs.common.config import Settings
from libs.common.logging import get_logger
from libs.common.secrets import mask_url
from models.fastlane.dataset import vectors_of_days
from models.fastlane.sequence import SequenceWindows
from models.fastlane.train import TrainConfig, train_horizon
from models.fastlane.zoo import WINDOWED
from tradefleet.backtest import report as tearsheet
from tradefleet.backtest.engine import Backtest
from tradefleet.backtest.metrics import Trade, performance
from tradefleet.backtest.sources import DaySource

log = get_logger(__name__)


def train_fold(days: list[DaySource], settings: Settings, registry: Path, promote: str) -> dict[str, Any]:
    """Train every horizon on these days into ``registry``; what each horizon ended with."""
    fl, features = settings.fastlane, settings.features
    calendar = market_calendar(settings.market)
    sessions = ((d.session(calendar), d.records()) for d in days)
    windows = SequenceWindows(fl.source_timeframe) if any(f in WINDOWED for f in fl.families) else None
    vectors = list(
        vectors_of_days(sessions, features, fl.source_timeframe, calendar=calendar, windows=windows)
    )
    names = list(features.names)
    cfg = TrainConfig(horizons=list(fl.horizons), families=list(fl.families), promote=promote)
    out: dict[str, Any] = {"vectors": len(vectors)}
    for horizon in fl.horizons:
        try:
            result = train_horizon(
                vectors, names, features.feature_set, horizon, cfg, registry, None, windows
            )
        except ValueError as exc:  # too little data for this horizon: said, not hidden
            out[horizon] = {"version": None, "error": str(exc)}
            continue
        out[horizon] = {
            "version": result["version"],
            "promotion": result["promotion"],
            "rows": result["rows"],
            "span": result["span"],
            "cv": result["summary"],
        }
    return out


def folds_of(
    days: list[DaySource], train_days: int, test_days: int
) -> list[tuple[list[DaySource], list[DaySource]]]:
    if train_days < 1 or test_days < 1:
        raise ValueError("--train-days and --test-days must be at least 1")
    out = []
    start = 0
    while start + train_days < len(days):
        out.append(
            (days[start : start + train_days], days[start + train_days : start + train_days + test_days])
        )
        start += test_days
    if not out:
        raise ValueError(
            f"{len(days)} trading day(s) with data: walk-forward needs more than --train-days ({train_days})"
        )
    return out


def run(
    settings: Settings,
    data: str,
    symbols: list[str],
    days: list[DaySource],
    report_dir: Path,
    train_days: int,
    test_days: int,
    news: list[Path],
    promote: str = "gate",
    sentiment: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    folds = []
    combined_ts: list[np.ndarray] = []
    combined_returns: dict[str, list[np.ndarray]] = {}
    trades: list[Trade] = []
    costs: list[tuple[float, float]] = []
    bench: dict[int, float] = {}
    for k, (train, test) in enumerate(folds_of(days, train_days, test_days), start=1):
        fold_dir = report_dir / f"fold-{k}"
        registry = fold_dir / "registry"
        log.info("walk-forward fold", fold=k, train=[d.date for d in train], test=[d.date for d in test])
        trained = train_fold(train, settings, registry, promote)
        fold_settings = settings.model_copy(
            update={"fastlane": settings.fastlane.model_copy(update={"registry": registry})}
        )
        result = asyncio.run(
            Backtest(fold_settings, test, news=news, progress=progress, sentiment=sentiment).run()
        )
        fold_report, plots = tearsheet.build(result, data, symbols)
        tearsheet.write_built(fold_report, plots, result.ledger, fold_dir)
        folds.append(
            {
                "fold": k,
                "train": [d.date for d in train],
                "test": [d.date for d in test],
                "training": trained,
                "metrics": fold_report["metrics"],
                "orders": fold_report["orders"],
                "report": str(fold_dir / "report.html"),
            }
        )
        capital = result.ledger.capital
        combined_ts.append(plots["ts"])
        for name, equity in [("strategy", plots["equity"])] + [
            (n, c.equity) for n, c in plots["curves"].items()
        ]:
            curve = np.concatenate([[capital], equity])
            combined_returns.setdefault(name, []).append(curve[1:] / curve[:-1] - 1.0)
        trades += plots["trades"]
        cost = fold_report["metrics"]["strategy"]["cost_bps"]
        if cost is not None:
            costs.append((cost, sum(t.notional for t in plots["trades"])))
        bench.update(plots["bench"])
    capital = settings.risk.account_equity
    ts = np.concatenate(combined_ts) if combined_ts else np.zeros(0, dtype=np.int64)
    test_days_total = sum(len(f["test"]) for f in folds)
    overall = {}
    for name, parts in combined_returns.items():
        equity = capital * np.cumprod(1.0 + np.concatenate(parts))
        weights = sum(w for _, w in costs)
        cost = sum(c * w for c, w in costs) / weights if weights and name == "strategy" else None
        row = performance(
            ts, equity, capital, trades if name == "strategy" else [], test_days_total, cost, bench
        )
        if name != "strategy":
            for key in (
                "trades",
                "hit_rate",
                "expectancy",
                "expectancy_bps",
                "profit_factor",
                "turnover",
                "avg_holding_min",
                "cost_bps",
            ):
                row[key] = None  # per fold in the fold reports; chained equity only here
        overall[name] = row
    out = {
        "mode": "walk-forward",
        "train_days": train_days,
        "test_days": test_days,
        "promote": promote,
        "symbols": symbols,
        "data": mask_url(data),
        "folds": folds,
        "overall": overall,
    }
    tearsheet.write_walk_forward(out, ts, combined_returns, capital, report_dir)
    return out

"""The body of `tradefleet train fastlane` (kept out of the CLI module so it imports lazily)."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any

from libs.common.calendar import MarketCalendar
from libs.common.config import FeaturesSettings
from libs.common.secrets import mask_url
from models.fastlane import registry, report
from models.fastlane.dataset import lean_symbols, lean_tick_dates, replay_vectors, store_days, vectors_from_db
from models.fastlane.sequence import SequenceWindows
from models.fastlane.train import TrainConfig, train_horizon
from models.fastlane.zoo import WINDOWED
from proto.features import MICRO_FEATURE_SET, MICRO_TIMEFRAME, FeatureVector


def resolve_lean_root(data: Path) -> Path:
    """Accept the LEAN root or any folder above it (../shared/data works as given)."""
    for candidate in (data, data / "market" / "lean", data / "lean"):
        if (candidate / "equity" / "usa" / "tick").exists():
            return candidate
    raise FileNotFoundError(f"no LEAN tick data under {data} (expected equity/usa/tick/<symbol>/)")


def run(
    data: str,
    cfg: TrainConfig,
    features: FeaturesSettings,
    registry_root: Path,
    report_dir: Path | None,
    symbols: list[str] | None,
    dates: list[str] | None = None,
    progress: bool = True,
    calendar: MarketCalendar | None = None,
    last_days: int | None = None,
) -> dict[str, Any]:
    """``dates`` keeps only those days (YYYYMMDD); ``last_days`` then only the latest N of the
    days found (a rolling window: the scheduled retrain's)."""
    from tqdm import tqdm

    started = time.monotonic()
    windows = SequenceWindows() if any(f in WINDOWED for f in cfg.families) else None
    if data.startswith(("postgresql://", "postgres://")):
        held = store_days(data, features.feature_set)
        chosen = _window([d for d in held if not dates or d in dates], last_days)
        if not chosen:
            wanted = f"days {dates}" if dates else "any day"
            raise ValueError(
                f"the feature store {mask_url(data)} holds no {features.feature_set} vectors for {wanted}"
            )
        vectors = vectors_from_db(data, features.feature_set, days=chosen)
        if symbols:
            vectors = [v for v in vectors if v.symbol in symbols]
        if windows is not None:
            feed_windows(windows, vectors, vectors_from_db(data, MICRO_FEATURE_SET, MICRO_TIMEFRAME, chosen))
        source: dict[str, Any] = {"source": "feature store", "dsn": mask_url(data), "days": chosen}
    else:
        root = resolve_lean_root(Path(data))
        days = lean_tick_dates(root, symbols or lean_symbols(root))
        if dates:
            days = {d: s for d, s in days.items() if d in dates}
        days = {d: days[d] for d in _window(list(days), last_days)}
        if not days:
            raise ValueError(f"no tick data for dates {dates} under {root}")
        vectors = list(
            replay_vectors(root, days, features, progress=progress, calendar=calendar, windows=windows)
        )
        source = {"source": "lean replay", "root": str(root), "days": days}
    if not vectors:
        raise ValueError("no feature vectors: nothing to train on")
    names = list(features.names)
    results = []
    bar = tqdm(total=len(cfg.horizons) * cfg.folds, desc="training folds", unit="fold", disable=not progress)
    for horizon in cfg.horizons:
        bar.set_postfix(horizon=horizon)
        results.append(
            train_horizon(vectors, names, features.feature_set, horizon, cfg, registry_root, bar, windows)
        )
    bar.close()
    context = {
        **source,
        "feature_set": features.feature_set,
        "vectors": len(vectors),
        "config": cfg.__dict__,
        "registry": str(registry_root),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    if report_dir is None:
        report_dir = Path("var/reports") / f"fastlane-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    json_path, html_path = report.write(report_dir, results, context)
    # Beside each registered model too: whoever finds a version in the registry finds its evidence.
    for r in results:
        version_dir = registry.horizon_dir(registry_root, r["horizon"]) / r["version"]
        for path in (json_path, html_path):
            shutil.copy2(path, version_dir / path.name)
    return {"report_json": str(json_path), "report_html": str(html_path), "results": results, **context}


def feed_windows(windows: SequenceWindows, bars: list[FeatureVector], seconds: list[FeatureVector]) -> None:
    """The recorded bar and one-second vectors into ``windows`` in the order features emitted them:
    by time, a second's vector before the bar it closes."""
    merged = sorted([*bars, *seconds], key=lambda v: (v.ts_event, v.timeframe != MICRO_TIMEFRAME))
    for v in merged:
        windows.see(v)


def _window(days: list[str], last: int | None) -> list[str]:
    """The latest ``last`` of the sorted ``days`` (all of them when ``last`` is None)."""
    ordered = sorted(days)
    return ordered if last is None else ordered[-last:]

"""The fast lane's drift monitor after it was vectorized for the decision path: the same bins,
counts and verdicts as the per-value, per-feature formulas (written out here as the oracle), and
one binning per vector for horizons that share their edges. Also the features' percentile rank,
now a bisection, against the count it replaced."""

from __future__ import annotations

import collections
import copy
import math
import random
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.clock import SimClock
from models.fastlane import registry
from models.fastlane.drift import EPS, Binner, DriftMonitor, _bin, _chi2_99, binner_for, part_of
from models.fastlane.serving import load_active
from services.features.indicators import PercentileRank
from tests.kit import stubs

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "registry"


def _reference() -> dict[str, Any]:
    meta = registry.read_meta(SHIPPED, "15m", registry.active_version(SHIPPED, "15m") or "")
    ref: dict[str, Any] = meta["drift_reference"]
    return ref


def _rows(features: list[dict[str, Any]], n: int, seed: int, shift: str = "") -> list[list[float]]:
    """Values around each feature's edges (every bin visited), some missing, one feature moved."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        row = []
        for f in features:
            edges = f["edges"] or [0.0]
            lo, hi = min(edges) - 1.0, max(edges) + 1.0
            v = float(rng.uniform(lo, hi)) if rng.random() > 0.05 else math.nan
            if f["name"] == shift and i > n // 2:
                v = hi + 5.0
            row.append(v)
        names = [f["name"] for f in features]
        if "minutes_since_open" in names:
            row[names.index("minutes_since_open")] = float(i % 390)
        rows.append(row)
    return rows


def _oracle_psi(monitor: DriftMonitor, window: list[tuple[int, list[int]]]) -> dict[str, tuple[float, float]]:
    """Each judged feature's (PSI, excess) from the window's (part, bins) rows, value by value."""
    parts = monitor.parts
    out = {}
    for k, f in enumerate(monitor.features):
        width = len(f["expected"])
        counts = [[0] * width for _ in range(parts)]
        for part, row in window:
            counts[part][row[k]] += 1
        actual = [sum(c[b] for c in counts) for b in range(width)]
        present = sum(actual) - actual[0]
        ess = float(f.get("ess", 1.0))
        if f.get("exempt") or present < monitor.min_samples or present * ess < monitor.min_effective:
            continue
        expected = [0.0] * width
        for p in range(parts):
            n_part = sum(counts[p]) - counts[p][0]
            for b in range(width):
                expected[b] += n_part / present * f["by_part"][p][b]
        if 1.0 - expected[0] <= 0:
            continue
        total = 0.0
        for b in range(1, width):
            e, a = max(expected[b] / (1.0 - expected[0]), EPS), max(actual[b] / present, EPS)
            total += (a - e) * math.log(a / e)
        n_eff, m_eff = present * ess, monitor.reference_samples * ess
        out[f["name"]] = (total, total - _chi2_99(width - 2) * (1.0 / n_eff + 1.0 / m_eff))
    return out


def test_the_binner_bins_as_value_by_value_does() -> None:
    features = _reference()["features"]
    binner = binner_for(features)
    for row in _rows(features, 300, seed=1):
        assert binner.row(row).tolist() == [_bin(f["edges"], v) for f, v in zip(features, row, strict=True)]
    assert binner_for(copy.deepcopy(features)) is binner  # horizons with the same edges share one


def test_a_check_gives_the_per_feature_figures_exactly() -> None:
    ref = _reference()
    monitor = DriftMonitor(ref, window=200, check_every=40, min_samples=100, warmup=5)
    names = [f["name"] for f in ref["features"]]
    window: collections.deque[tuple[int, list[int]]] = collections.deque(maxlen=200)
    seen: collections.Counter[str] = collections.Counter()
    reports = 0
    for i, row in enumerate(_rows(ref["features"], 900, seed=2, shift="spread_bps")):
        symbol = "IBM" if i % 2 else "BAC"
        report = monitor.add(row, 0.5 + 0.1 * math.sin(i), symbol)
        seen[symbol] += 1
        if seen[symbol] > 5:
            part = part_of(row[names.index("minutes_since_open")])
            window.append((part, [_bin(f["edges"], v) for f, v in zip(ref["features"], row, strict=True)]))
        if report is None:
            continue
        reports += 1
        oracle = _oracle_psi(monitor, list(window))
        assert report.samples == len(window) and report.judged == len(oracle)
        worst = max(oracle, key=lambda name: oracle[name][1])
        assert report.worst_feature == worst
        assert report.max_psi == round(oracle[worst][0], 4)
        assert report.excess_psi == round(oracle[worst][1], 4)
    assert reports >= 15 and monitor.last is not None and monitor.last.drifted


def test_the_core_bins_each_vector_once_for_every_horizon(tmp_path: Path) -> None:
    from services.fastlane.core import FastlaneCore

    core = FastlaneCore(SimClock(5), ["5m", "15m", "30m", "60m"])
    for horizon in ("5m", "15m", "30m", "60m"):
        model = load_active(SHIPPED, horizon, "lightgbm", tmp_path, {"warmup": 0})
        assert model is not None
        core.install(model)
    binners = {id(m.drift.binner) for m in core.models.values()}
    assert len(binners) == 1  # one training's horizons: the same edges
    calls = 0
    original = Binner.row

    def counting(self: Binner, values: list[float]) -> np.ndarray:
        nonlocal calls
        calls += 1
        return original(self, values)

    Binner.row = counting  # type: ignore[method-assign]
    try:
        model = next(iter(core.models.values()))
        row = _rows(model.drift.features, 1, seed=3)[0]
        preds, _ = core.on_vector(stubs.vector(row, feature_set=model.feature_set, ts=60_000_000_000))
    finally:
        Binner.row = original  # type: ignore[method-assign]
    assert len(preds) == 4 and calls == 1
    assert all(m.drift.filled == 1 for m in core.models.values())


def test_the_percentile_rank_counts_the_values_below() -> None:
    rng = random.Random(4)
    for n in (2, 7, 100):
        rank, window = PercentileRank(n), collections.deque[float](maxlen=n)
        for _ in range(3000):
            x = rng.choice([rng.random(), round(rng.random(), 1), 0.5, -0.0, 0.0, math.inf, math.nan])
            got = rank.rank_then_add(x)
            if math.isnan(x):
                assert math.isnan(got)
                continue
            want = sum(1 for v in window if v < x) / len(window) if len(window) >= 10 else math.nan
            window.append(x)
            assert got == want or (math.isnan(got) and math.isnan(want))

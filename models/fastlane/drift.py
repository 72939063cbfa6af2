"""Drift: rolling PSI per feature and a KS statistic on the score, against the training data,
comparing like with like.

The reference (stored in the model's metadata, ``reference``) holds per feature the decile edges
of the training data, the proportions in each bin over the whole data and per part of the session
(the open's hour, late morning, midday, the afternoon: by ``minutes_since_open``), and how many
independent samples a vector is worth (``ess``: one over the integrated autocorrelation time of
the feature along each symbol's vectors); plus quantiles of the training scores.

Online, each vector adds its bin indices to a rolling window (the first ``warmup`` vectors of
each symbol after a start are left out: indicators still filling their windows). Every
``check_every`` vectors, each feature's window is compared with the reference mixed in the
window's own proportions of the session's parts (a window of mornings is held to the mornings),
and PSI counts only beyond what sampling alone gives once in a hundred checks for the effective
sample sizes (chi-square(bins - 1) at 99% x (1/n_eff + 1/m_eff)); a feature with fewer than
``min_effective`` independent samples in the window is not judged (a 30-minute RSI moves too
slowly for a day to say anything).

A reference from before (no parts, no ess) is judged against the whole data, each vector an
independent sample (models/fastlane/refresh_drift.py rebuilds one from the days it was trained on).
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

BINS = 10
# Clock features: a rolling window covers part of a day by construction, so their window
# distribution always differs from a whole day's. Not monitored (the session's parts use it).
EXEMPT = frozenset({"minutes_since_open"})
CLOCK = "minutes_since_open"
# Where the session's parts start, in minutes since the open.
PARTS = (0, 60, 150, 270)
EPS = 1e-4  # floor on a proportion inside PSI's log
KS_CRITICAL = 1.949  # two-sample KS at alpha 0.001


def part_of(minutes: float) -> int:
    if math.isnan(minutes):
        return 0
    return max(bisect.bisect_right(PARTS, minutes) - 1, 0)


def _ess(column: np.ndarray, symbols: np.ndarray | None, max_lag: int = 240) -> float:
    """Independent samples per vector: 1 / tau, tau the integrated autocorrelation time along
    each symbol's series (1 + 2 x the autocorrelations, summed until the first that is not
    positive, up to ``max_lag`` vectors: Sokal's window). Features that hold a level for hours
    (a 30-minute RSI, a one-tick spread in bps) are worth a few samples a day, not hundreds."""
    groups = (
        [np.arange(len(column))]
        if symbols is None
        else [np.flatnonzero(symbols == s) for s in np.unique(symbols)]
    )
    series = []
    for rows in groups:
        x = column[rows]
        x = x[np.isfinite(x)]
        if len(x) > 10 and np.std(x) > 0:
            series.append((x - x.mean()) / x.std())
    if not series:
        return 0.001  # nothing to estimate from (constant, or too few values): judged last, if ever
    tau = 1.0
    for lag in range(1, max_lag + 1):
        products = [float(np.mean(x[:-lag] * x[lag:])) for x in series if len(x) > lag + 10]
        if not products:
            break
        rho = float(np.mean(products))
        if rho <= 0:
            break
        tau += 2 * rho
    return min(max(1.0 / tau, 0.001), 1.0)


def reference(
    X: np.ndarray,
    scores: np.ndarray,
    names: list[str],
    symbols: np.ndarray | None = None,
    days: list[str] | None = None,
) -> dict[str, Any]:
    """``X``: every vector the model would have scored over its training days (in time order;
    not only the labelled rows), ``scores`` the model's on them, ``symbols`` each row's symbol,
    ``days`` which days they were (YYYY-MM-DD; kept so the reference can be rebuilt)."""
    clock = names.index(CLOCK) if CLOCK in names else None
    parts = (
        np.array([part_of(float(m)) for m in X[:, clock]])
        if clock is not None
        else np.zeros(len(X), dtype=int)
    )
    features = []
    for k, name in enumerate(names):
        column = X[:, k]
        finite = column[~np.isnan(column)]
        edges = (
            sorted(set(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]).tolist()))
            if finite.size
            else []
        )
        bins = np.array([_bin(edges, float(v)) for v in column], dtype=int)
        width = len(edges) + 2
        counts = np.bincount(bins, minlength=width).astype(float)
        by_part = []
        for p in range(len(PARTS)):
            c = np.bincount(bins[parts == p], minlength=width).astype(float)
            by_part.append((c / c.sum()).tolist() if c.sum() else (counts / max(counts.sum(), 1)).tolist())
        features.append(
            {
                "name": name,
                "edges": edges,
                "expected": (counts / max(len(column), 1)).tolist(),
                "by_part": by_part,
                "ess": round(_ess(column, symbols), 5),
                "exempt": name in EXEMPT,
            }
        )
    quantiles = np.quantile(scores, np.linspace(0, 1, 201)).tolist() if scores.size else []
    return {
        "features": features,
        "score_quantiles": quantiles,
        "score_ess": round(_ess(np.asarray(scores, dtype=float), symbols), 5) if scores.size else 1.0,
        "samples": len(X),
        "parts": list(PARTS),
        "days": days or [],
    }


def _bin(edges: list[float], value: float) -> int:
    """0 is the missing-value bin; 1.. are the ranges between edges."""
    if math.isnan(value):
        return 0
    return 1 + bisect.bisect_right(edges, value)


def _chi2_99(df: int) -> float:
    """The 99th percentile of chi-square with ``df`` degrees of freedom (Wilson-Hilferty): PSI
    times the effective sample size is about chi-square(bins - 1) when nothing moved, so PSI
    beyond this over n_eff is what sampling alone would give once in a hundred checks."""
    if df <= 0:
        return 0.0
    z = NormalDist().inv_cdf(0.99)
    return float(df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3)


def psi(expected: list[float], actual: list[float]) -> float:
    total = 0.0
    for exp, act in zip(expected, actual, strict=True):
        e, a = max(exp, EPS), max(act, EPS)
        total += (a - e) * math.log(a / e)
    return total


def shift_against_quantiles(quantiles: list[float], sample: list[float]) -> float:
    """How far the scores moved, in their own units: the mean distance between the live and the
    training quantiles (Wasserstein-1 on a 201-point grid). KS alone is scale-free: a model whose
    scores barely move (0.580 to 0.581) would drift on a shift of a ten-thousandth."""
    if not quantiles or not sample:
        return 0.0
    live = np.quantile(np.asarray(sample), np.linspace(0, 1, len(quantiles)))
    return float(np.mean(np.abs(live - np.asarray(quantiles))))


def ks_against_quantiles(quantiles: list[float], sample: list[float]) -> float:
    """Two-sample KS statistic with the training scores summarised by their quantiles."""
    if not quantiles or not sample:
        return 0.0
    ref = np.asarray(quantiles)
    live = np.sort(np.asarray(sample))
    grid = np.union1d(ref, live)
    ref_cdf = np.searchsorted(ref, grid, side="right") / len(ref)
    live_cdf = np.searchsorted(live, grid, side="right") / len(live)
    return float(np.max(np.abs(ref_cdf - live_cdf)))


@dataclass
class DriftReport:
    max_psi: float  # the worst judged feature's PSI
    worst_feature: str
    ks: float
    samples: int
    drifted: bool
    judged: int = 0  # features with enough independent samples to judge
    excess_psi: float = 0.0  # the worst feature's PSI beyond sampling noise


class DriftMonitor:
    def __init__(
        self,
        ref: dict[str, Any],
        window: int = 500,
        check_every: int = 50,
        psi_limit: float = 0.25,
        ks_limit: float = 0.3,
        min_samples: int = 200,
        min_effective: float = 10.0,
        warmup: int = 30,
        min_score_shift: float = 0.01,
    ) -> None:
        self.features = ref["features"]
        self.quantiles = ref["score_quantiles"]
        self.score_ess = float(ref.get("score_ess", 1.0))
        self.reference_samples = int(ref.get("samples", 0))
        self.by_part = all("by_part" in f for f in self.features) and bool(self.features)
        names = [f["name"] for f in self.features]
        self.clock = names.index(CLOCK) if self.by_part and CLOCK in names else None
        self.window, self.check_every = window, check_every
        self.psi_limit, self.ks_limit, self.min_samples = psi_limit, ks_limit, min_samples
        self.min_effective, self.warmup, self.min_score_shift = min_effective, warmup, min_score_shift
        self.bins: collections.deque[tuple[int, list[int]]] = collections.deque()
        parts = len(PARTS) if self.clock is not None else 1
        self.counts = [[[0] * len(f["expected"]) for f in self.features] for _ in range(parts)]
        self.scores: collections.deque[float] = collections.deque(maxlen=window)
        self.seen_by_symbol: collections.Counter[str] = collections.Counter()
        self.seen = 0
        self.warming = 0  # vectors left out as warm-up
        self.last: DriftReport | None = None

    def add(self, values: list[float], score: float, symbol: str = "") -> DriftReport | None:
        """Add one scored vector; a report every ``check_every`` vectors once enough are in."""
        self.seen_by_symbol[symbol] += 1
        if self.seen_by_symbol[symbol] <= self.warmup:
            self.warming += 1
            return None
        row = [_bin(f["edges"], v) for f, v in zip(self.features, values, strict=True)]
        part = part_of(values[self.clock]) if self.clock is not None else 0
        for counts, b in zip(self.counts[part], row, strict=True):
            counts[b] += 1
        self.bins.append((part, row))
        if len(self.bins) > self.window:
            old_part, old_row = self.bins.popleft()
            for counts, b in zip(self.counts[old_part], old_row, strict=True):
                counts[b] -= 1
        self.scores.append(score)
        self.seen += 1
        if self.seen % self.check_every or len(self.bins) < self.min_samples:
            return None
        self.last = self.check()
        return self.last

    def _feature_psi(self, k: int, f: dict[str, Any]) -> tuple[float, float] | None:
        """(PSI, PSI beyond sampling noise) of feature k over the values present, against the
        reference mixed in the window's proportions of the session's parts; None: not judged."""
        width = len(f["expected"])
        actual = [sum(part[k][b] for part in self.counts) for b in range(width)]
        present = sum(actual) - actual[0]
        ess = float(f.get("ess", 1.0))
        if f.get("exempt") or present < self.min_samples or present * ess < self.min_effective:
            return None
        if self.clock is not None:
            expected = [0.0] * width
            for p, part in enumerate(self.counts):
                n_part = sum(part[k]) - part[k][0]
                if n_part:
                    for b in range(width):
                        expected[b] += n_part / present * f["by_part"][p][b]
        else:
            expected = list(f["expected"])
        expected_present = 1.0 - expected[0]
        if expected_present <= 0:
            return None
        value = psi([e / expected_present for e in expected[1:]], [c / present for c in actual[1:]])
        n_eff = present * ess
        m_eff = self.reference_samples * ess if self.reference_samples else math.inf
        return value, value - _chi2_99(width - 2) * (1.0 / n_eff + 1.0 / m_eff)

    def check(self) -> DriftReport:
        n = len(self.bins)
        worst, worst_excess, worst_name, judged = 0.0, -math.inf, "", 0
        for k, f in enumerate(self.features):
            # PSI over the values present: indicators are NaN while they warm up after a cold
            # start, which is not drift (the missing-value bin is left out on both sides).
            found = self._feature_psi(k, f)
            if found is None:
                continue
            judged += 1
            value, excess = found
            if excess > worst_excess:
                worst, worst_excess, worst_name = value, excess, f["name"]
        ks = ks_against_quantiles(self.quantiles, list(self.scores))
        # The score is autocorrelated too: KS beyond what the effective sizes alone give.
        n_eff = max(len(self.scores) * self.score_ess, 1.0)
        m_eff = self.reference_samples * self.score_ess if self.reference_samples else math.inf
        ks_critical = KS_CRITICAL * math.sqrt(1.0 / n_eff + 1.0 / m_eff)
        scores = list(self.scores)
        score_drift = ks > max(self.ks_limit, ks_critical) and (
            shift_against_quantiles(self.quantiles, scores) >= self.min_score_shift
        )
        drifted = worst_excess > self.psi_limit or score_drift
        excess = round(worst_excess, 4) if judged else 0.0
        return DriftReport(round(worst, 4), worst_name, round(ks, 4), n, drifted, judged, excess)

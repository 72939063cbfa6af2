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
import functools
import math
from collections.abc import Sequence
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


class Binner:
    """Every feature's bin index of one vector (``_bin`` of each value) in one numpy pass.

    Written for the fast lane's hot path: binning value by value cost most of a monitor's time,
    once per horizon. The edges are padded with NaN (a comparison with NaN is false, so a padded
    edge never counts), and the monitors of one training (the horizons' references have the same
    edges) share one binner: the core bins a vector once for all of them (``add``'s ``binned``)."""

    def __init__(self, edges: list[list[float]]) -> None:
        most = max((len(e) for e in edges), default=0)
        self.edges = np.full((len(edges), most), np.nan)
        for k, e in enumerate(edges):
            self.edges[k, : len(e)] = e
        self.width = most + 2  # the missing-value bin, and one more than the edges

    def row(self, values: list[float]) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (self.edges.shape[0],):
            raise ValueError(f"{v.shape[0]} values for {self.edges.shape[0]} features")
        row = (self.edges <= v[:, None]).sum(axis=1) + 1
        row[np.isnan(v)] = 0
        return row


@functools.lru_cache(maxsize=64)
def _binner(edges: tuple[tuple[float, ...], ...]) -> Binner:
    return Binner([list(e) for e in edges])


def binner_for(features: list[dict[str, Any]]) -> Binner:
    """The binner of these edges, one per distinct set of edges (the horizons share one)."""
    return _binner(tuple(tuple(f["edges"]) for f in features))


def _chi2_99(df: int) -> float:
    """The 99th percentile of chi-square with ``df`` degrees of freedom (Wilson-Hilferty): PSI
    times the effective sample size is about chi-square(bins - 1) when nothing moved, so PSI
    beyond this over n_eff is what sampling alone would give once in a hundred checks."""
    if df <= 0:
        return 0.0
    z = NormalDist().inv_cdf(0.99)
    return float(df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3)


def _quantiles_of_sorted(live: np.ndarray, count: int) -> np.ndarray:
    """``np.quantile(live, np.linspace(0, 1, count))`` (its linear method) of an already sorted
    array, without the partition np.quantile does for every point of the grid."""
    position = np.linspace(0, 1, count) * (len(live) - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, len(live) - 1)
    t = position - below
    a, b = live[below], live[above]
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def shift_against_quantiles(
    quantiles: Sequence[float] | np.ndarray, sample: Sequence[float] | np.ndarray
) -> float:
    """How far the scores moved, in their own units: the mean distance between the live and the
    training quantiles (Wasserstein-1 on a 201-point grid). KS alone is scale-free: a model whose
    scores barely move (0.580 to 0.581) would drift on a shift of a ten-thousandth."""
    if len(quantiles) == 0 or len(sample) == 0:
        return 0.0
    live = _quantiles_of_sorted(np.sort(np.asarray(sample, dtype=np.float64)), len(quantiles))
    return float(np.mean(np.abs(live - np.asarray(quantiles))))


def ks_against_quantiles(
    quantiles: Sequence[float] | np.ndarray, sample: Sequence[float] | np.ndarray
) -> float:
    """Two-sample KS statistic with the training scores summarised by their quantiles: the
    largest gap of the two CDFs, which is reached at one of the points of either."""
    if len(quantiles) == 0 or len(sample) == 0:
        return 0.0
    ref = np.asarray(quantiles, dtype=np.float64)
    live = np.sort(np.asarray(sample, dtype=np.float64))
    points = np.concatenate((ref, live))
    ref_cdf = np.searchsorted(ref, points, side="right") / len(ref)
    live_cdf = np.searchsorted(live, points, side="right") / len(live)
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


class _Reference:
    """The reference's per-feature figures as arrays, padded to the binner's width (a padded
    bin is empty on both sides: both floored at EPS, its PSI term is 0)."""

    def __init__(self, features: list[dict[str, Any]], width: int, parts: int) -> None:
        count = len(features)
        self.expected = np.zeros((count, width))
        self.by_part = np.zeros((max(parts, 1), count, width))
        for k, f in enumerate(features):
            own = len(f["expected"])
            self.expected[k, :own] = f["expected"]
            for p in range(parts):
                self.by_part[p, k, :own] = f["by_part"][p]
        self.ess = np.array([float(f.get("ess", 1.0)) for f in features])
        self.watched = np.array([not f.get("exempt") for f in features], dtype=bool)
        self.chi2 = np.array([_chi2_99(len(f["expected"]) - 2) for f in features])


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
        self._quantiles = np.asarray(self.quantiles, dtype=np.float64)
        self.score_ess = float(ref.get("score_ess", 1.0))
        self.reference_samples = int(ref.get("samples", 0))
        self.by_part = all("by_part" in f for f in self.features) and bool(self.features)
        names = [f["name"] for f in self.features]
        self.clock = names.index(CLOCK) if self.by_part and CLOCK in names else None
        self.window, self.check_every = window, check_every
        self.psi_limit, self.ks_limit, self.min_samples = psi_limit, ks_limit, min_samples
        self.min_effective, self.warmup, self.min_score_shift = min_effective, warmup, min_score_shift
        self.parts = len(PARTS) if self.clock is not None else 1
        self.binner = binner_for(self.features)
        self._ref = _Reference(self.features, self.binner.width, self.parts if self.by_part else 0)
        # The window, a ring: each kept vector as its cells in a [part, feature, bin] grid
        # (flattened, one per feature), and its score. A check (every ``check_every`` vectors)
        # counts the cells with one bincount instead of counts kept per vector: the per-vector
        # work is the binning, shared by the horizons, and one row written.
        features, width = len(self.features), self.binner.width
        self._offsets = (np.arange(self.parts)[:, None] * features + np.arange(features)) * width
        self._cells = np.zeros((window, features), dtype=np.int64)
        self._next = 0
        self.filled = 0  # vectors in the window
        self._scores = np.zeros(window)  # the scores of the window's vectors, in the ring too
        self.seen_by_symbol: collections.Counter[str] = collections.Counter()
        self.seen = 0
        self.warming = 0  # vectors left out as warm-up
        self.last: DriftReport | None = None

    def add(
        self,
        values: list[float],
        score: float,
        symbol: str = "",
        binned: dict[Binner, np.ndarray] | None = None,
    ) -> DriftReport | None:
        """Add one scored vector; a report every ``check_every`` vectors once enough are in.
        ``binned``: the vector's rows already binned, by binner (the other horizons' monitors
        share this one's binner when their edges are the same), and where this one's goes."""
        self.seen_by_symbol[symbol] += 1
        if self.seen_by_symbol[symbol] <= self.warmup:
            self.warming += 1
            return None
        row = None if binned is None else binned.get(self.binner)
        if row is None:
            row = self.binner.row(values)
            if binned is not None:
                binned[self.binner] = row
        part = part_of(values[self.clock]) if self.clock is not None else 0
        np.add(row, self._offsets[part], out=self._cells[self._next])
        self._scores[self._next] = score
        self._next = (self._next + 1) % self.window
        self.filled = min(self.filled + 1, self.window)
        self.seen += 1
        if self.seen % self.check_every or self.filled < self.min_samples:
            return None
        self.last = self.check()
        return self.last

    def counts(self) -> np.ndarray:
        """Vectors in the window per session part, feature and bin: ``[part, feature, bin]``."""
        features, width = len(self.features), self.binner.width
        flat = np.bincount(self._cells[: self.filled].ravel(), minlength=self.parts * features * width)
        return flat.reshape(self.parts, features, width)

    def _psi(self, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each feature's (PSI, PSI beyond sampling noise, judged) over the values present,
        against the reference mixed in the window's proportions of the session's parts.

        Every feature at once (numpy), with the figures a loop per feature, part and bin gave:
        that loop took about 1 ms a check, on the scoring path every ``check_every`` vectors,
        for each horizon."""
        ref = self._ref
        actual = counts.sum(axis=0)  # [feature, bin]
        present = actual.sum(axis=1) - actual[:, 0]
        judged = ref.watched & (present >= self.min_samples) & (present * ref.ess >= self.min_effective)
        safe_present = np.maximum(present, 1)
        if self.clock is not None:
            n_part = counts.sum(axis=2) - counts[:, :, 0]  # [part, feature]
            expected = np.zeros(actual.shape)
            for p in range(self.parts):
                expected += (n_part[p] / safe_present)[:, None] * ref.by_part[p]
        else:
            expected = ref.expected
        expected_present = 1.0 - expected[:, 0]
        judged &= expected_present > 0
        e = np.maximum(expected[:, 1:] / np.where(expected_present > 0, expected_present, 1.0)[:, None], EPS)
        a = np.maximum(actual[:, 1:] / safe_present[:, None], EPS)
        terms = (a - e) * np.log(a / e)
        # Summed over the outer axis: numpy adds row after row, bin by bin in order as the
        # scalar loop did (along the inner axis it sums pairwise, which rounds differently).
        value = np.ascontiguousarray(terms.T).sum(axis=0)
        n_eff = np.maximum(present * ref.ess, 1e-12)
        m_eff = self.reference_samples * ref.ess if self.reference_samples else np.full(len(present), np.inf)
        excess = value - ref.chi2 * (1.0 / n_eff + 1.0 / m_eff)
        return value, excess, judged

    def check(self) -> DriftReport:
        n = self.filled
        # PSI over the values present: indicators are NaN while they warm up after a cold
        # start, which is not drift (the missing-value bin is left out on both sides).
        values, excesses, judged_mask = self._psi(self.counts())
        worst, worst_excess, worst_name, judged = 0.0, -math.inf, "", int(judged_mask.sum())
        if judged:
            k = int(np.flatnonzero(judged_mask)[np.argmax(excesses[judged_mask])])  # the first worst
            worst, worst_excess, worst_name = float(values[k]), float(excesses[k]), self.features[k]["name"]
        scores = self._scores[: self.filled]
        ks = ks_against_quantiles(self._quantiles, scores)
        # The score is autocorrelated too: KS beyond what the effective sizes alone give.
        n_eff = max(len(scores) * self.score_ess, 1.0)
        m_eff = self.reference_samples * self.score_ess if self.reference_samples else math.inf
        ks_critical = KS_CRITICAL * math.sqrt(1.0 / n_eff + 1.0 / m_eff)
        score_drift = ks > max(self.ks_limit, ks_critical) and (
            shift_against_quantiles(self._quantiles, scores) >= self.min_score_shift
        )
        drifted = worst_excess > self.psi_limit or score_drift
        excess = round(worst_excess, 4) if judged else 0.0
        return DriftReport(round(worst, 4), worst_name, round(ks, 4), n, drifted, judged, excess)

"""Drift: rolling PSI per feature and a KS statistic on the score, against the training data.

The reference (decile edges and training proportions per feature, plus quantiles of the training
scores) is stored in the model's metadata. Online, each vector adds its bin indices to a rolling
window; the statistics are computed every ``check_every`` vectors, never per vector.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 10
# Clock features: a rolling window covers part of a day by construction, so their window
# distribution always differs from a whole day's. Not monitored.
EXEMPT = frozenset({"minutes_since_open"})
EPS = 1e-4  # floor on a proportion inside PSI's log


def reference(X: np.ndarray, scores: np.ndarray, names: list[str]) -> dict[str, Any]:
    features = []
    for k, name in enumerate(names):
        column = X[:, k]
        finite = column[~np.isnan(column)]
        edges = (
            sorted(set(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]).tolist()))
            if finite.size
            else []
        )
        counts = np.zeros(len(edges) + 2)
        for value in column:
            counts[_bin(edges, float(value))] += 1
        expected = (counts / max(len(column), 1)).tolist()
        features.append({"name": name, "edges": edges, "expected": expected, "exempt": name in EXEMPT})
    quantiles = np.quantile(scores, np.linspace(0, 1, 201)).tolist() if scores.size else []
    return {"features": features, "score_quantiles": quantiles}


def _bin(edges: list[float], value: float) -> int:
    """0 is the missing-value bin; 1.. are the ranges between edges."""
    if math.isnan(value):
        return 0
    return 1 + bisect.bisect_right(edges, value)


def psi(expected: list[float], actual: list[float]) -> float:
    total = 0.0
    for exp, act in zip(expected, actual, strict=True):
        e, a = max(exp, EPS), max(act, EPS)
        total += (a - e) * math.log(a / e)
    return total


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
    max_psi: float
    worst_feature: str
    ks: float
    samples: int
    drifted: bool


class DriftMonitor:
    def __init__(
        self,
        ref: dict[str, Any],
        window: int = 500,
        check_every: int = 50,
        psi_limit: float = 0.25,
        ks_limit: float = 0.3,
        min_samples: int = 200,
    ) -> None:
        self.features = ref["features"]
        self.quantiles = ref["score_quantiles"]
        self.window, self.check_every = window, check_every
        self.psi_limit, self.ks_limit, self.min_samples = psi_limit, ks_limit, min_samples
        self.bins: collections.deque[list[int]] = collections.deque()
        self.counts = [[0] * len(f["expected"]) for f in self.features]
        self.scores: collections.deque[float] = collections.deque(maxlen=window)
        self.seen = 0
        self.last: DriftReport | None = None

    def add(self, values: list[float], score: float) -> DriftReport | None:
        """Add one scored vector; a report every ``check_every`` vectors once enough are in."""
        row = [_bin(f["edges"], v) for f, v in zip(self.features, values, strict=True)]
        for counts, b in zip(self.counts, row, strict=True):
            counts[b] += 1
        self.bins.append(row)
        if len(self.bins) > self.window:
            for counts, b in zip(self.counts, self.bins.popleft(), strict=True):
                counts[b] -= 1
        self.scores.append(score)
        self.seen += 1
        if self.seen % self.check_every or len(self.bins) < self.min_samples:
            return None
        self.last = self.check()
        return self.last

    def check(self) -> DriftReport:
        n = len(self.bins)
        worst, worst_name = 0.0, ""
        for f, counts in zip(self.features, self.counts, strict=True):
            # PSI over the values present: indicators are NaN while they warm up after a cold
            # start, which is not drift (the missing-value bin is left out on both sides).
            present = n - counts[0]
            expected_present = 1.0 - f["expected"][0]
            if f.get("exempt") or present < self.min_samples or expected_present <= 0:
                continue
            value = psi([e / expected_present for e in f["expected"][1:]], [c / present for c in counts[1:]])
            if value > worst:
                worst, worst_name = value, f["name"]
        ks = ks_against_quantiles(self.quantiles, list(self.scores))
        drifted = worst > self.psi_limit or ks > self.ks_limit
        return DriftReport(round(worst, 4), worst_name, round(ks, 4), n, drifted)

"""How good a fast-lane model is, with its uncertainty: AUC intervals, fold intervals, calibration
and returns by prediction decile (what the training report and the registry record)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from libs.common.markettime import ny_datetime
from proto.units import BPS

DECILES = 10
LEVEL = 0.95
RESAMPLES = 500


def ny_iso(ts_ns: int) -> str:
    """A moment in New York time with its offset (the session, and the backtest, are in NY time)."""
    return ny_datetime(ts_ns).isoformat(timespec="seconds")


def rank_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """AUC of each row of ``p`` (2-D: one resample per row) from ranks; NaN without both classes."""
    from scipy.stats import rankdata

    y, p = np.atleast_2d(y), np.atleast_2d(p)
    positives = y.sum(axis=1)
    negatives = y.shape[1] - positives
    ranks = rankdata(p, axis=1)  # ties share their mean rank, as in roc_auc_score
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def auc_interval(y: np.ndarray, p: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the AUC on these rows (percentile method, rows resampled)."""
    if len(y) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(y), size=(RESAMPLES, len(y)))
    aucs = rank_auc(y[picks].astype(float), p[picks])
    aucs = aucs[~np.isnan(aucs)]
    if not len(aucs):
        return math.nan, math.nan
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return float(low), float(high)


def t_interval(values: list[float], bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """Mean over folds with its 95% Student-t interval (folds are few: a normal one is too narrow),
    cut to the metric's range when it has one (an AUC below 0 is no statement about anything)."""
    from scipy.stats import t

    xs = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if not len(xs):
        return {"mean": math.nan, "low": math.nan, "high": math.nan}
    mean = float(xs.mean())
    if len(xs) < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan}
    half = float(t.ppf(0.5 + LEVEL / 2, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs)))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "low": low, "high": high}


def decile_of(p: np.ndarray) -> np.ndarray:
    """Each row's decile (0 lowest) by rank of its probability: ten equal groups even when the
    calibrated probabilities tie, which quantile edges would leave empty."""
    order = np.argsort(p, kind="stable")
    out = np.empty(len(p), dtype=int)
    out[order] = np.arange(len(p)) * DECILES // max(len(p), 1)
    return out


def calibration_table(p: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """Per probability decile: rows, mean predicted and observed up share with a Wilson interval."""
    bins = decile_of(p)
    out = []
    for b in range(DECILES):
        rows = bins == b
        n = int(rows.sum())
        if not n:
            continue
        observed = float(y[rows].mean())
        low, high = _wilson(observed, n)
        out.append(
            {
                "decile": b + 1,
                "rows": n,
                "predicted": float(p[rows].mean()),
                "observed": observed,
                "observed_low": low,
                "observed_high": high,
            }
        )
    return out


def decile_returns(p: np.ndarray, forward: np.ndarray, cost: np.ndarray) -> list[dict[str, Any]]:
    """Per probability decile, in bps: the mean forward return, the mean round-trip cost, and what
    a long and a short held for the horizon earned net of that cost."""
    bins = decile_of(p)
    out = []
    for b in range(DECILES):
        rows = bins == b
        if not rows.any():
            continue
        fwd, c = forward[rows] * BPS, cost[rows] * BPS
        out.append(
            {
                "decile": b + 1,
                "rows": int(rows.sum()),
                "p_low": float(p[rows].min()),
                "p_high": float(p[rows].max()),
                "gross_bps": float(fwd.mean()),
                "cost_bps": float(c.mean()),
                "net_long_bps": float((fwd - c).mean()),
                "net_short_bps": float((-fwd - c).mean()),
            }
        )
    return out


def _wilson(share: float, n: int) -> tuple[float, float]:
    z = 1.959963984540054  # the 95% normal quantile
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Clamped to [0, 1] and around the share: at a share of 0 or 1 rounding leaves the bound a
    # hair outside, which a plot's error bar refuses as a negative length.
    return max(0.0, min(centre - half, share)), min(1.0, max(centre + half, share))

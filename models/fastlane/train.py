"""`tradefleet train fastlane`: labels, purged walk-forward CV, LightGBM, calibration, registry.

Per horizon:
1. label the vectors (forward return net of the round-trip cost; see dataset.py);
2. purged walk-forward CV with exactly ``folds`` evaluated folds: an opening window only trains
   (one ``folds + 1``-th of the rows, longer when that leaves too few to fit after purging), the
   rest is cut in time into ``folds`` test blocks, and fold k trains on everything before block k.
   Training rows whose label window reaches into the test block are purged, and an embargo drops
   the rows just before it. Too little data for the folds asked for is an error, never fewer folds;
3. in each fit, the last 20% of the training rows (in time) drive early stopping and then fit a
   Platt calibration of the raw scores;
4. the final model is fitted on all rows the same way, exported to ONNX, timed on every engine,
   and registered with its metadata;
5. the promotion gate: it becomes active only if its out-of-fold log loss beats, on the same test
   rows, both the active model's and a constant base-rate forecast's (no skill, no promotion).
   Every verdict says why: the gate's failures, or the --promote mode that overrode it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.logging import get_logger
from libs.common.markettime import parse_duration_ns
from models.fastlane import drift, registry, zoo
from models.fastlane.dataset import CostModel, Dataset, label
from models.fastlane.engines import ENGINES, load_engine, logit, time_calls, time_engine
from models.fastlane.evaluation import auc_interval, ny_iso, t_interval
from models.fastlane.sequence import SequenceWindows

log = get_logger(__name__)
VALIDATION_SHARE = 0.2
MIN_TRAIN_ROWS = 200
# A fold's metrics on fewer rows say nothing; on a few dozen they say little, and the report's
# intervals show how little (one symbol's day in the walk-forward backtest leaves that much).
MIN_TEST_ROWS = 10


@dataclass
class TrainConfig:
    horizons: list[str] = field(default_factory=lambda: ["5m", "10m", "15m", "30m", "60m"])
    # the model families of each horizon (zoo.FAMILIES), blended by the ZooBalancer when several
    families: list[str] = field(default_factory=lambda: ["lightgbm"])
    folds: int = 4
    embargo: str = "5m"
    labels: str = "fixed"  # or "triple-barrier"
    barrier_atr: float = 1.0
    commission_bps: float = 0.5
    rounds: int = 400
    early_stopping: int = 30
    learning_rate: float = 0.03
    num_leaves: int = 7
    min_data_in_leaf: int = 50
    seed: int = 7
    promote: str = "gate"  # "gate", "force" or "never"
    # log-loss units a new model must gain over the base rate and over the active model: a gain
    # smaller than fold-to-fold noise is not a reason to swap models
    min_gain: float = 0.002
    logistic_c: float = 0.1  # inverse L2 strength of the logistic family
    mlp_hidden: tuple[int, ...] = (32, 16)
    mlp_epochs: int = 60

    def lgb_params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": self.seed,
            "deterministic": True,
            "num_threads": 2,
            "verbose": -1,
        }


@dataclass
class Fitted:
    """One family's model, its Platt calibration and the mean forward return of its up and down
    rows (the expected return of a probability)."""

    model: Any
    platt_a: float
    platt_b: float
    up_mean: float
    down_mean: float
    best_iteration: int
    family: str = "lightgbm"

    def raw(self, X: np.ndarray, S: np.ndarray | None = None) -> np.ndarray:
        return zoo.raw_probability(self.family, self.model, X, self.best_iteration, S)

    def predict(self, X: np.ndarray, S: np.ndarray | None = None) -> np.ndarray:
        raw = self.raw(X, S)
        z = self.platt_a * np.log(np.clip(raw, 1e-12, 1 - 1e-12) / np.clip(1 - raw, 1e-12, 1)) + self.platt_b
        return 1.0 / (1.0 + np.exp(-z))


@dataclass
class ZooFit:
    """A horizon's families and the ZooBalancer's blend of them (one family: that family)."""

    members: dict[str, Fitted]
    blend: zoo.Blend

    @property
    def lead(self) -> Fitted:
        """The member whose calibration and expected-return means the version's meta carries
        (lightgbm when present: what a registry without a zoo serves)."""
        return self.members.get("lightgbm") or next(iter(self.members.values()))

    @property
    def up_mean(self) -> float:
        return self.lead.up_mean

    @property
    def down_mean(self) -> float:
        return self.lead.down_mean

    def family_predictions(self, X: np.ndarray, S: np.ndarray | None = None) -> dict[str, np.ndarray]:
        return {f: m.predict(X, S) for f, m in self.members.items()}

    def predict(self, X: np.ndarray, S: np.ndarray | None = None) -> np.ndarray:
        return self.blend.combine(self.family_predictions(X, S))


def walk_forward_folds(ds: Dataset, folds: int, embargo_ns: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) for each of ``folds`` folds, purged and embargoed (rows in time order).

    A row may train for a test block starting at T once its label is known and it lies outside the
    embargo: max(end_ts, ts + embargo) < T. Raises ValueError when the data cannot give ``folds``
    folds of MIN_TEST_ROWS test rows after an opening window of MIN_TRAIN_ROWS usable rows."""
    first = _first_test_row(ds, folds, embargo_ns)
    if len(ds) - first < folds * MIN_TEST_ROWS:
        raise ValueError(
            f"{folds} folds need {folds * MIN_TEST_ROWS} test rows after the first {first} rows that "
            f"only train; {len(ds) - first} remain: use fewer --folds or more data"
        )
    edges = np.quantile(ds.ts[first:], np.linspace(0, 1, folds + 1))
    out = []
    for k in range(folds):
        start, end = edges[k], edges[k + 1]
        in_block = (ds.ts >= start) & ((ds.ts < end) if k < folds - 1 else (ds.ts <= end))
        test = np.where(in_block)[0]
        train = np.where((ds.end_ts < start) & (ds.ts < start - embargo_ns))[0]
        if len(test) < MIN_TEST_ROWS:  # rows sharing one timestamp can make a block short
            raise ValueError(f"fold {k + 1} of {folds} has {len(test)} test rows: use fewer --folds")
        out.append((train, test))
    return out


def _first_test_row(ds: Dataset, folds: int, embargo_ns: int) -> int:
    """Where the first test block starts: after one block of rows, or later when the rows before
    it would leave fewer than MIN_TRAIN_ROWS to train on once purged and embargoed."""
    usable_from = np.sort(np.maximum(ds.end_ts, ds.ts + embargo_ns))
    if len(usable_from) < MIN_TRAIN_ROWS:
        raise ValueError(f"{len(ds)} labelled rows; a fold needs {MIN_TRAIN_ROWS} to train on")
    enough = int(np.searchsorted(ds.ts, usable_from[MIN_TRAIN_ROWS - 1], side="right"))
    return max(enough, len(ds) // (folds + 1))


def fit(ds: Dataset, rows: np.ndarray, cfg: TrainConfig, family: str = "lightgbm") -> Fitted:
    from sklearn.linear_model import LogisticRegression

    cut = int(len(rows) * (1 - VALIDATION_SHARE))
    fit_rows, val_rows = rows[:cut], rows[cut:]
    fit_rows = fit_rows[ds.end_ts[fit_rows] < ds.ts[val_rows[0]]]  # purge into the validation tail
    X_fit, y_fit, X_val, y_val = ds.X[fit_rows], ds.y[fit_rows], ds.X[val_rows], ds.y[val_rows]
    S_val = ds.S[val_rows] if ds.S is not None else None
    if family == "lightgbm":
        model, best = zoo.train_lightgbm(X_fit, y_fit, X_val, y_val, cfg)
    elif family == "logistic":
        model, best = zoo.train_logistic(X_fit, y_fit, cfg), 0
    elif family == "mlp":
        model, best = zoo.train_mlp(X_fit, y_fit, X_val, y_val, cfg)
    else:
        if ds.S is None or S_val is None:
            raise ValueError("the sequence family needs the one-second windows (features.emit_micro)")
        model, best = zoo.train_sequence(ds.S[fit_rows], y_fit, S_val, y_val, cfg)
    raw = zoo.raw_probability(family, model, X_val, best, S_val)
    z = np.array([logit(float(p)) for p in raw]).reshape(-1, 1)
    if len(set(y_val.tolist())) == 2:
        # Strongly regularized: the slope shrinks toward "no information" unless the validation
        # tail supports it. Unregularized Platt on a few hundred rows was overconfident out of
        # sample (log loss 0.75-1.04 against a base rate's 0.69-0.76 on the shared data).
        platt = LogisticRegression(C=0.05).fit(z, y_val)
        a, b = float(platt.coef_[0][0]), float(platt.intercept_[0])
    else:
        a, b = 1.0, 0.0
    y_rows, fwd = ds.y[rows], ds.forward[rows]
    up = float(fwd[y_rows == 1].mean()) if (y_rows == 1).any() else 0.0
    down = float(fwd[y_rows == 0].mean()) if (y_rows == 0).any() else 0.0
    return Fitted(model, a, b, up, down, best, family)


def fit_zoo(ds: Dataset, rows: np.ndarray, cfg: TrainConfig, blend: zoo.Blend) -> ZooFit:
    return ZooFit({f: fit(ds, rows, cfg, f) for f in cfg.families}, blend)


def metrics(y: np.ndarray, p: np.ndarray, forward: np.ndarray, base_rate: float) -> dict[str, float]:
    from scipy.stats import spearmanr
    from sklearn.metrics import log_loss, roc_auc_score

    both = len(set(y.tolist())) == 2
    ic = spearmanr(p, forward).statistic if len(p) > 2 and np.std(p) > 0 else 0.0
    auc_low, auc_high = auc_interval(y, p) if both else (math.nan, math.nan)
    return {
        "rows": len(y),
        "auc": float(roc_auc_score(y, p)) if both else math.nan,
        "auc_low": auc_low,
        "auc_high": auc_high,
        "log_loss": float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])),
        "base_log_loss": float(log_loss(y, np.full(len(y), base_rate), labels=[0, 1])),
        "brier": float(np.mean((p - y) ** 2)),
        "base_brier": float(np.mean((base_rate - y) ** 2)),
        "hit_rate": float(np.mean((p > 0.5) == (y == 1))),
        "ic": 0.0 if math.isnan(ic) else float(ic),
        "up_share": float(np.mean(y)),
    }


def _rows(S: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return S[rows] if S is not None else None


def _population_scores(
    final: ZooFit, vectors: list[Any], population: np.ndarray, windows: SequenceWindows | None
) -> np.ndarray:
    """The final zoo's probability of every vector (in chunks: a window per vector is large)."""
    if not any(f in zoo.WINDOWED for f in final.members):
        return final.predict(population)
    assert windows is not None
    out = []
    for start in range(0, len(vectors), 4096):
        chunk = vectors[start : start + 4096]
        S = np.stack([windows.of(v.symbol, v.ts_event) for v in chunk])
        out.append(final.predict(population[start : start + 4096], S))
    return np.concatenate(out)


def _score_with_active(
    root: Path, horizon: str, feature_set: str, X: np.ndarray, S: np.ndarray | None = None
) -> np.ndarray | None:
    """The active version's probabilities on ``X`` (its reference engines: the gate compares the
    models, not the compilers); None when there is none or it reads another feature set."""
    from models.fastlane.serving import build_scorer

    version = registry.active_version(root, horizon)
    if version is None:
        return None
    meta = registry.read_meta(root, horizon, version)
    if meta["feature_set"] != feature_set:
        return None
    scorer, _ = build_scorer(meta, registry.horizon_dir(root, horizon) / version, "reference", None)
    if S is None:
        return np.array([scorer.score(list(map(float, row)))[0] for row in X])
    return np.array([scorer.score(list(map(float, row)), w)[0] for row, w in zip(X, S, strict=True)])


def train_horizon(
    vectors: list[Any],
    names: list[str],
    feature_set: str,
    horizon: str,
    cfg: TrainConfig,
    root: Path,
    progress: Any = None,
    windows: SequenceWindows | None = None,
) -> dict[str, Any]:
    """One horizon's zoo: labelled, cross-validated, calibrated, blended, registered and judged.
    ``windows``: the one-second windows of the vectors (needed by the sequence family)."""
    from sklearn.metrics import log_loss

    if any(f in zoo.WINDOWED for f in cfg.families) and windows is None:
        raise ValueError(f"horizon {horizon}: the sequence family needs the replay's one-second windows")

    cost = CostModel(cfg.commission_bps, spread_index=names.index("spread_bps"))
    ds = label(
        vectors,
        parse_duration_ns(horizon),
        cost,
        cfg.labels,
        cfg.barrier_atr,
        atr_index=names.index("atr14_bps"),
        windows=windows if any(f in zoo.WINDOWED for f in cfg.families) else None,
    )
    if len(ds) < 200:
        raise ValueError(f"horizon {horizon}: only {len(ds)} labelled rows; more data is needed")
    try:
        folds = walk_forward_folds(ds, cfg.folds, parse_duration_ns(cfg.embargo))
    except ValueError as exc:
        raise ValueError(f"horizon {horizon}: {exc}") from None
    fold_reports: list[dict[str, Any]] = []
    oof_p: list[np.ndarray] = []
    oof_rows: list[np.ndarray] = []
    oof_family: dict[str, list[np.ndarray]] = {f: [] for f in cfg.families}
    active_losses: list[float] = []
    for k, (train_rows, test_rows) in enumerate(folds):
        # The blend of fold k is fitted on the earlier folds' out-of-fold rows only, so its own
        # test rows judge it as they judge each family (fold 1: equal weights).
        earlier = np.concatenate(oof_rows) if oof_rows else np.array([], dtype=int)
        blend = zoo.fit_blend(
            {f: np.concatenate(v) if v else np.array([]) for f, v in oof_family.items()}, ds.y[earlier]
        )
        model = fit_zoo(ds, train_rows, cfg, blend)
        by_family = model.family_predictions(ds.X[test_rows], _rows(ds.S, test_rows))
        p = blend.combine(by_family)
        base = float(np.mean(ds.y[train_rows]))
        report: dict[str, Any] = metrics(ds.y[test_rows], p, ds.forward[test_rows], base)
        report.update(
            fold=k + 1,
            train_rows=len(train_rows),
            best_iteration=model.lead.best_iteration,
            test_start=ny_iso(int(ds.ts[test_rows[0]])),
            test_end=ny_iso(int(ds.ts[test_rows[-1]])),
        )
        if len(cfg.families) > 1:
            report["families"] = {
                f: metrics(ds.y[test_rows], q, ds.forward[test_rows], base) for f, q in by_family.items()
            }
            report["blend"] = blend.to_meta()
        active_p = _score_with_active(root, horizon, feature_set, ds.X[test_rows], _rows(ds.S, test_rows))
        if active_p is not None:
            report["active_log_loss"] = float(
                log_loss(ds.y[test_rows], np.clip(active_p, 1e-6, 1 - 1e-6), labels=[0, 1])
            )
            active_losses.append(report["active_log_loss"])
        fold_reports.append(report)
        oof_p.append(p)
        oof_rows.append(test_rows)
        for f, q in by_family.items():
            oof_family[f].append(q)
        if progress is not None:
            progress.update(1)
    all_rows = np.concatenate(oof_rows)
    final_blend = zoo.fit_blend({f: np.concatenate(v) for f, v in oof_family.items()}, ds.y[all_rows])
    final = fit_zoo(ds, np.arange(len(ds)), cfg, final_blend)
    summary = _summary(fold_reports)
    families = _family_summaries(fold_reports, cfg.families)
    # The trading signal is the probability's distance from the model's no-information point
    # (its median out-of-fold probability: the base rate of the training days is not a view) in
    # units of how far its probabilities usually stray (90th percentile), clipped to [-1, 1].
    all_p = np.concatenate(oof_p)
    signal_center = float(np.median(all_p))
    signal_scale = max(float(np.quantile(np.abs(all_p - signal_center), 0.9)), 0.005)
    # The drift reference: every vector the model would have scored over its span (not only
    # the labelled rows: those lean to the volatile minutes), with its own scores.
    population = np.array([v.values for v in vectors], dtype=float)
    reference = drift.reference(
        population,
        _population_scores(final, vectors, population, windows),
        names,
        np.array([v.symbol for v in vectors]),
        sorted({ny_iso(v.ts_event)[:10] for v in vectors}),
    )
    version, verdict = _register(
        ds,
        names,
        feature_set,
        horizon,
        cfg,
        root,
        final,
        fold_reports,
        summary,
        active_losses,
        (signal_center, signal_scale),
        reference,
        families,
    )
    return {
        "horizon": horizon,
        "version": version,
        "rows": len(ds),
        "neutral_rows": ds.neutral,
        "up_share": float(np.mean(ds.y)),
        "span": [ny_iso(int(ds.ts[0])), ny_iso(int(ds.ts[-1]))],
        "folds": fold_reports,
        "summary": summary,
        "promotion": verdict,
        "families": families,
        "importance": _importance(final, names),
        # Out-of-fold rows for the report's calibration and decile tables (not kept in report.json).
        "oof": {
            "p": all_p.tolist(),
            "y": ds.y[all_rows].tolist(),
            "forward": ds.forward[all_rows].tolist(),
            "cost": ds.cost[all_rows].tolist(),
            "fold": np.repeat(np.arange(1, len(folds) + 1), [len(r) for r in oof_rows]).tolist(),
        },
    }


SUMMARY_KEYS = ("auc", "log_loss", "base_log_loss", "brier", "base_brier", "hit_rate", "ic")
# The range of each bounded metric: its interval is cut there.
METRIC_BOUNDS = {
    "auc": (0.0, 1.0),
    "brier": (0.0, 1.0),
    "base_brier": (0.0, 1.0),
    "hit_rate": (0.0, 1.0),
    "ic": (-1.0, 1.0),
}


def _summary(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """mean_<metric> over folds, and <metric>_interval: that mean with its 95% t-interval."""
    out: dict[str, Any] = {"folds": len(folds)}
    for key in SUMMARY_KEYS:
        interval = t_interval([f[key] for f in folds], METRIC_BOUNDS.get(key))
        out[f"mean_{key}"] = interval["mean"]
        out[f"{key}_interval"] = interval
    return out


def _family_summaries(folds: list[dict[str, Any]], families: list[str]) -> dict[str, Any]:
    """Each family's own out-of-fold summary (a zoo of several; empty for one family)."""
    if len(families) < 2:
        return {}
    return {f: _summary([fold["families"][f] for fold in folds]) for f in families}


def _importance(model: ZooFit, names: list[str]) -> list[tuple[str, float]]:
    """LightGBM's gain per feature (a zoo without lightgbm: none)."""
    if "lightgbm" not in model.members:
        return []
    gains = model.members["lightgbm"].model.feature_importance(importance_type="gain")
    ranked = sorted(zip(names, gains.tolist(), strict=True), key=lambda kv: -kv[1])
    return [(n, round(g, 3)) for n, g in ranked if g > 0][:25]


def _register(
    ds: Dataset,
    names: list[str],
    feature_set: str,
    horizon: str,
    cfg: TrainConfig,
    root: Path,
    final: ZooFit,
    folds: list[dict[str, Any]],
    summary: dict[str, Any],
    active_losses: list[float],
    signal: tuple[float, float],
    reference: dict[str, Any],
    families: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    # Staged beside the versions, on the registry's own filesystem, so that the version appears
    # by one rename, whole: a run killed before it leaves a hidden staging folder, never a half
    # version (the registry may be a volume of its own: a move from /tmp would be a copy).
    folder = registry.horizon_dir(root, horizon)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=registry.STAGING_PREFIX, dir=folder))
    digest = hashlib.sha256()
    for family, member in final.members.items():
        zoo.export(family, member.model, staging, len(names), member.best_iteration)
        digest.update((staging / zoo.ARTIFACT[family]).read_bytes())
    version = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{digest.hexdigest()[:8]}"
    timing_rows = ds.X[-min(len(ds), 2000) :]
    lead = final.lead
    timings = _time_engines(staging, timing_rows, root) if lead.family == "lightgbm" else {}
    verdict = _gate(cfg, summary, active_losses, registry.active_version(root, horizon))
    meta: dict[str, Any] = {
        "kind": "fastlane",
        "version": version,
        "horizon": horizon,
        "feature_set": feature_set,
        "names": names,
        "data_span": [ny_iso(int(ds.ts[0])), ny_iso(int(ds.ts[-1]))],
        "symbols": sorted(set(ds.symbols.tolist())),
        "rows": len(ds),
        "labels": {
            "method": cfg.labels,
            "cost": asdict(CostModel(cfg.commission_bps)),
            "neutral_rows": ds.neutral,
        },
        "calibration": {
            "method": "platt",
            "platt_a": lead.platt_a,
            "platt_b": lead.platt_b,
            "up_mean": final.up_mean,
            "down_mean": final.down_mean,
            "signal_center": signal[0],
            "signal_scale": signal[1],
        },
        "best_iteration": lead.best_iteration,
        "cv": {"folds": folds, "summary": summary, "embargo": cfg.embargo},
        "engines": timings,
        "engine_order": sorted(timings, key=lambda e: timings[e]["p99_us"]),
        "drift_reference": reference,
        "params": asdict(cfg),
        "code_version": registry.code_version(),
        "promotion": verdict,
    }
    if cfg.families != ["lightgbm"]:
        timing_windows = ds.S[-min(len(ds), 2000) :] if ds.S is not None else None
        meta["zoo"] = _zoo_meta(final, families, staging, timing_rows, timings, timing_windows)
        if not timings:  # no lightgbm: the blend's own timing is what "auto" serves
            meta["engines"] = {"zoo": meta["zoo"]["blend"]["serving"]}
            meta["engine_order"] = ["zoo"]
    (staging / "meta.json").write_text(json.dumps(meta, indent=1, allow_nan=True))
    staging.chmod(0o755)  # mkdtemp makes it private; other users (the services) read versions
    os.rename(staging, folder / version)
    if verdict["promoted"]:
        registry.activate(root, horizon, version)
    return version, verdict


def _gate(
    cfg: TrainConfig, summary: dict[str, Any], active_losses: list[float], active: str | None
) -> dict[str, Any]:
    """The verdict and its reasons: ``gate_failures`` are the gate's objections whatever the mode;
    ``reasons`` say why the model was not promoted (empty when it was)."""
    mode, gain = cfg.promote, cfg.min_gain
    new_loss = summary["mean_log_loss"]
    beats_base = new_loss < summary["mean_base_log_loss"] - gain
    # Skill is also ranking better than chance with confidence: the base rate's log loss is that
    # of the training days' up-share, and a test fold whose up-share differs penalizes it, so a
    # model of noise that says about 0.5 can "beat" it (the honesty test on synthetic noise did).
    auc_low = float(summary["auc_interval"]["low"])
    ranks = not math.isnan(auc_low) and auc_low > 0.5  # one fold: no interval, no evidence
    skill = beats_base and ranks
    beats_active = not active_losses or new_loss < float(np.mean(active_losses)) - gain
    failures = []
    if not beats_base:
        failures.append(
            f"log loss {new_loss:.5f} is not {gain} better than the base rate's "
            f"{summary['mean_base_log_loss']:.5f}"
        )
    if not ranks:
        failures.append(f"AUC's 95% interval over the folds reaches {auc_low:.3f}: no better than chance")
    if not beats_active:
        failures.append(
            f"log loss {new_loss:.5f} is not {gain} better than the active model's "
            f"{np.mean(active_losses):.5f}"
        )
    promoted = mode == "force" or (mode == "gate" and not failures)
    if promoted:
        reasons = []
    elif mode == "never":
        reasons = ["--promote never", *failures]
    else:
        reasons = failures
    return {
        "mode": mode,
        "promoted": promoted,
        "previous_active": active,
        "skill": skill,
        "beats_active": beats_active,
        "active_mean_log_loss": float(np.mean(active_losses)) if active_losses else None,
        "gate_failures": failures,
        "reasons": reasons,
    }


def verdict_text(verdict: dict[str, Any]) -> str:
    """One line: promoted or not, and why (what the CLI prints and the report shows)."""
    if not verdict["promoted"]:
        return "not promoted: " + "; ".join(verdict["reasons"])
    failures = verdict.get("gate_failures") or []
    if verdict["mode"] == "force" and failures:
        return "promoted by --promote force over the gate: " + "; ".join(failures)
    if verdict["mode"] == "force":
        return "promoted (--promote force; the gate also passed)"
    return "promoted: passed the gate"


def _zoo_meta(
    final: ZooFit,
    families: dict[str, Any],
    folder: Path,
    rows: np.ndarray,
    lightgbm_timings: dict[str, Any],
    windows: np.ndarray | None,
) -> dict[str, Any]:
    """Each family's file, calibration, out-of-fold summary and serving p50/p99, and the blend's
    weights, temperature and serving p50/p99 (every member scored and blended, one row; the
    sequence family's window given, as fastlane builds it before scoring)."""
    from models.fastlane.engines import OnnxEngine, OnnxWindowEngine, Scorer

    members: dict[str, Any] = {}
    for family, m in final.members.items():
        if family == "lightgbm":
            engines = lightgbm_timings
        elif family in zoo.WINDOWED:
            window_scorer = Scorer(OnnxWindowEngine(folder / zoo.ARTIFACT[family]), 1.0, 0.0, 0.0, 0.0)
            engines = {"onnx": time_scorer(window_scorer, rows, windows)}
        else:
            engines = {"onnx": time_engine(OnnxEngine(folder / zoo.ARTIFACT[family]), rows)}
        members[family] = {
            "file": zoo.ARTIFACT[family],
            "calibration": {"platt_a": m.platt_a, "platt_b": m.platt_b},
            "best_iteration": m.best_iteration,
            "cv": families.get(family, {}),
            "engines": engines,
            "engine_order": sorted(engines, key=lambda e: engines[e]["p99_us"]),
        }
    meta: dict[str, Any] = {"families": members, "blend": final.blend.to_meta()}
    from models.fastlane.serving import build_scorer

    with tempfile.TemporaryDirectory(prefix="lleaves-") as cache:
        scorer, engine = build_scorer(
            {"zoo": meta, "calibration": {"up_mean": 0.0, "down_mean": 0.0}}, folder, "auto", Path(cache)
        )
        meta["blend"]["serving"] = {**time_scorer(scorer, rows, windows), "engine": engine}
    return meta


def time_scorer(
    scorer: Any, rows: np.ndarray, windows: np.ndarray | None = None, repeats: int = 3
) -> dict[str, float]:
    """Single-row latency of a whole scorer (every engine, calibration and blend), as time_engine."""
    lists = [list(map(float, r)) for r in rows]
    given = list(windows) if windows is not None else [None] * len(lists)
    return time_calls(scorer.score, list(zip(lists, given, strict=True)), repeats)


def _time_engines(version_dir: Path, rows: np.ndarray, root: Path) -> dict[str, dict[str, float]]:
    """Single-row p50/p99 of every engine on the same rows, same run (what 'auto' picks from)."""
    out = {}
    cache = Path(tempfile.mkdtemp(prefix="lleaves-"))
    for name in ENGINES:
        try:
            out[name] = time_engine(load_engine(name, version_dir, cache), rows)
        except Exception as exc:
            log.warning("engine could not be timed", engine=name, error=repr(exc))
    shutil.rmtree(cache, ignore_errors=True)
    return out

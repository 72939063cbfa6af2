"""Ablation: the walk-forward backtest with the full system, again with nothing removed (it must
reproduce the full run: the check that the rows below compare like with like), and with each
named component removed, on the same folds and the same trained models.

A component is whatever the full system's configuration turns on and a user could turn off: a
fast-lane horizon QOS weighs, a model family of the zoo (``fastlane.families``: the folds are
trained again without it), a rule strategy (RSI reversion, the opening-range breakout, the news
trigger, pairs), the universe prefilter, headline sentiment, the RL policy, TCA feedback on
execution. Each
row gives P&L, profit factor, Sharpe, hit rate, trades and cost with a bootstrap confidence
interval, and a verdict from the paired difference with the full run, minute by minute:

- keep: removing it lowers P&L (the interval of full - without lies above 0);
- remove: removing it raises P&L (the interval lies below 0);
- no evidence: the interval holds 0 (on a few days, the usual answer: say so, do not guess).

Intervals: a moving-block bootstrap (blocks of ``BLOCK_MIN`` minutes, so intraday
autocorrelation stays inside a block) for P&L and Sharpe and for the paired difference; the
trades themselves resampled for profit factor and hit rate; the TCA records for cost.
"""

from __future__ import annotations

import asyncio
import functools
import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.config import STRATEGY_INPUTS, Settings
from libs.common.logging import get_logger
from libs.common.secrets import mask_url
from tradefleet.backtest.engine import Backtest, BacktestResult, clean_day, cleaning_of
from tradefleet.backtest.metrics import MINUTES_PER_YEAR, Trade, episodes
from tradefleet.backtest.report import strategy_executions
from tradefleet.backtest.sources import DaySource
from tradefleet.backtest.walkforward import folds_of, train_fold

log = get_logger(__name__)

BLOCK_MIN = 30  # minutes per bootstrap block
CONFIDENCE = 0.95
FULL, NOTHING = "full", "nothing"


@dataclass(frozen=True)
class Component:
    name: str
    what: str
    remove: Callable[[Settings], Settings]
    sentiment: bool = True  # does the run without it still score headlines
    retrain: bool = False  # the models themselves change without it (a model family): train again


def _without_weight(settings: Settings, key: str) -> Settings:
    qos = settings.qos
    weights = {k: v for k, v in qos.weights.items() if k != key}
    fastlane = settings.fastlane
    horizons = [h for h in fastlane.horizons if h != key]
    return settings.model_copy(
        update={
            "qos": qos.model_copy(update={"weights": weights}),
            "fastlane": fastlane.model_copy(update={"horizons": horizons}),
        }
    )


def _without_family(settings: Settings, family: str) -> Settings:
    fastlane = settings.fastlane
    families = [f for f in fastlane.families if f != family]
    return settings.model_copy(update={"fastlane": fastlane.model_copy(update={"families": families})})


def components_of(settings: Settings) -> list[Component]:
    """What the full system has on, each with the settings that take it out."""
    out = [
        Component(
            f"horizon:{h}", f"the {h} fast-lane model in QOS", functools.partial(_without_weight, key=h)
        )
        for h in settings.qos.horizons()
        if settings.qos.weights.get(h, 0) > 0
    ]
    families = settings.fastlane.families
    if len(families) > 1:
        out += [
            Component(
                f"family:{f}",
                f"the {f} model family in every horizon's zoo (the zoo trained again without it)",
                functools.partial(_without_family, family=f),
                retrain=True,
            )
            for f in families
        ]
    out += [
        Component(
            f"strategy:{name}",
            f"the {name} rule strategy in QOS",
            functools.partial(_without_weight, key=name),
        )
        for name in STRATEGY_INPUTS
        if settings.qos.weights.get(name, 0) > 0
    ]
    if settings.fastlane.prefilter:
        out.append(
            Component(
                "prefilter",
                "the universe prefilter (every vector scored)",
                lambda s: s.model_copy(
                    update={"fastlane": s.fastlane.model_copy(update={"prefilter": False})}
                ),
            )
        )
    if settings.qos.pairs:
        out.append(
            Component(
                "strategy:pairs",
                "pairs trading (" + ", ".join("/".join(p.legs) for p in settings.qos.pairs) + ")",
                lambda s: s.model_copy(update={"qos": s.qos.model_copy(update={"pairs": []})}),
            )
        )
    if settings.qos.weights.get("sentiment", 0) > 0:
        out.append(
            Component(
                "sentiment",
                "headline sentiment in QOS",
                lambda s: _without_weight(s, "sentiment"),
                sentiment=False,
            )
        )
    if settings.qos.policy == "on":
        out.append(
            Component(
                "policy",
                "the RL policy's sizing and timing",
                lambda s: s.model_copy(update={"qos": s.qos.model_copy(update={"policy": "off"})}),
            )
        )
    if settings.execution.feedback:
        out.append(
            Component(
                "tca-feedback",
                "TCA feedback on the execution tactic",
                lambda s: s.model_copy(
                    update={"execution": s.execution.model_copy(update={"feedback": False})}
                ),
            )
        )
    return out


@dataclass
class _Run:
    """One variant over every test fold, chained."""

    minutes: np.ndarray  # ts of each minute sample, folds in order
    pnl: np.ndarray  # the P&L of each minute (equity change), account currency
    returns: np.ndarray  # each minute's return on the equity before it
    trades: list[Trade]
    cost: list[tuple[float, float]]  # (cost_bps, notional) per TCA record
    record: list[str]  # the trading record, for the reproduction check
    orders: dict[str, Any]


def _fold_run(result: BacktestResult) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Trade], list[Any]]:
    ledger = result.ledger
    ts = np.array([m.ts for m in ledger.minutes], dtype=np.int64)
    equity = np.concatenate([[ledger.capital], [m.equity for m in ledger.minutes]])
    end = int(ts[-1]) if len(ts) else 0
    trades = episodes(strategy_executions(ledger), ledger.mids, end)
    return ts, np.diff(equity), equity[1:] / equity[:-1] - 1.0, trades, ledger.tca


@dataclass
class _Fold:
    """One variant over one test fold."""

    minutes: np.ndarray
    pnl: np.ndarray
    returns: np.ndarray
    trades: list[Trade]
    cost: list[tuple[float, float]]
    record: str
    counts: dict[str, int]
    denied: dict[str, int]


def _fold(
    settings: Settings, test: list[DaySource], registry: Path, news: list[Path], sentiment: bool
) -> _Fold:
    fold_settings = settings.model_copy(
        update={"fastlane": settings.fastlane.model_copy(update={"registry": registry})}
    )
    result = asyncio.run(Backtest(fold_settings, test, news=news, sentiment=sentiment).run())
    ts, pnl, rets, trades, tca = _fold_run(result)
    ledger = result.ledger
    return _Fold(
        ts,
        pnl,
        rets,
        trades,
        [(r.cost_bps, r.quantity * r.fill_ratio * r.arrival_price) for r in tca],
        json.dumps(ledger.trading_record(), sort_keys=True),
        {"intents": len(ledger.intents), "approved": ledger.approvals, "fills": len(ledger.fills)},
        dict(ledger.denials),
    )


def _chained(folds: list[_Fold]) -> _Run:
    """A variant's folds, chained in order."""
    counts = {"intents": 0, "approved": 0, "fills": 0}
    denied: dict[str, int] = {}
    for f in folds:
        for key, n in f.counts.items():
            counts[key] += n
        for code, n in f.denied.items():
            denied[code] = denied.get(code, 0) + n
    return _Run(
        np.concatenate([f.minutes for f in folds]) if folds else np.zeros(0, dtype=np.int64),
        np.concatenate([f.pnl for f in folds]) if folds else np.zeros(0),
        np.concatenate([f.returns for f in folds]) if folds else np.zeros(0),
        [t for f in folds for t in f.trades],
        [c for f in folds for c in f.cost],
        [f.record for f in folds],
        {**counts, "denied": denied},
    )


@dataclass(frozen=True)
class _Variant:
    name: str
    what: str
    settings: Settings
    sentiment: bool
    registries: list[Path]


def _every_variant(
    settings: Settings,
    folds: list[tuple[list[DaySource], list[DaySource]]],
    variants: list[_Variant],
    news: list[Path],
) -> dict[str, _Run]:
    """Every variant over every test fold, fold by fold: a fold's test days are cleaned once by
    the md-gateway core (clean_day) and replayed as they are for each variant (cleaning and
    reading the files cost more than half of a full-spine run), and only that fold's are held
    in memory (some 340 bytes a tick). A variant whose cleaning settings differ gets the records."""
    done: dict[str, list[_Fold]] = {v.name: [] for v in variants}
    cleaning = cleaning_of(settings)
    for k, (_, test) in enumerate(folds):
        cleaned: list[DaySource] = [clean_day(settings, day) for day in test]
        for v in variants:
            log.info("ablation: backtest", fold=k + 1, variant=v.name)
            days = cleaned if cleaning_of(v.settings) == cleaning else test
            done[v.name].append(_fold(v.settings, days, v.registries[k], news, v.sentiment))
        del cleaned
    return {name: _chained(f) for name, f in done.items()}


# -- statistics ------------------------------------------------------------------------------
def _blocks(n: int, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Indices of ``resamples`` moving-block bootstrap series of length n (rows)."""
    if n == 0:
        return np.zeros((resamples, 0), dtype=np.int64)
    block = min(BLOCK_MIN, n)
    count = math.ceil(n / block)
    starts = rng.integers(0, n - block + 1, size=(resamples, count))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(resamples, -1)
    return idx[:, :n]


def _interval(samples: np.ndarray) -> list[float | None]:
    finite = samples[np.isfinite(samples)]
    if not len(finite):
        return [None, None]
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


def _sharpe(returns: np.ndarray) -> Any:
    """Annualized, per row of a 2-D array (a number for a 1-D one)."""
    if returns.shape[-1] < 2:
        return math.nan
    std = returns.std(ddof=1, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return returns.mean(axis=-1) / std * math.sqrt(MINUTES_PER_YEAR)


def _profit_factor(pnl: np.ndarray) -> float:
    wins, losses = pnl[pnl > 0].sum(), -pnl[pnl <= 0].sum()
    return float(wins / losses) if losses > 0 else math.nan


def _metrics(run: _Run, rng: np.random.Generator, resamples: int) -> dict[str, Any]:
    idx = _blocks(len(run.pnl), rng, resamples)
    trade_pnl = np.array([t.pnl for t in run.trades])
    picks = rng.integers(0, len(trade_pnl), size=(resamples, len(trade_pnl))) if len(trade_pnl) else None
    costs = np.array(run.cost) if run.cost else np.zeros((0, 2))
    sharpe = _sharpe(run.returns)
    row: dict[str, Any] = {
        "pnl": round(float(run.pnl.sum()), 2),
        "pnl_ci": _interval(run.pnl[idx].sum(axis=1)),
        "sharpe": None if not math.isfinite(sharpe) else round(float(sharpe), 3),
        "sharpe_ci": _interval(np.asarray(_sharpe(run.returns[idx]))),
        "trades": len(run.trades),
        "profit_factor": None,
        "profit_factor_ci": [None, None],
        "hit_rate": None,
        "hit_rate_ci": [None, None],
        "cost_bps": None,
        "cost_bps_ci": [None, None],
        "orders": run.orders,
    }
    if picks is not None:
        pf = _profit_factor(trade_pnl)
        row["profit_factor"] = round(pf, 3) if math.isfinite(pf) else None
        row["profit_factor_ci"] = _interval(np.array([_profit_factor(trade_pnl[p]) for p in picks]))
        row["hit_rate"] = round(float((trade_pnl > 0).mean()), 4)
        row["hit_rate_ci"] = _interval((trade_pnl[picks] > 0).mean(axis=1))
    if len(costs) and costs[:, 1].sum() > 0:
        row["cost_bps"] = round(float(np.average(costs[:, 0], weights=costs[:, 1])), 3)
        pick = rng.integers(0, len(costs), size=(resamples, len(costs)))
        weights = costs[pick, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (costs[pick, 0] * weights).sum(axis=1) / weights.sum(axis=1)
        row["cost_bps_ci"] = _interval(boot)
    return row


def _verdict(full: _Run, without: _Run, rng: np.random.Generator, resamples: int) -> dict[str, Any]:
    """Full minus without, minute by minute over the minutes both have: the P&L the component
    added, its interval, and what that says."""
    if full.record == without.record:
        return {
            "delta_pnl": 0.0,
            "delta_pnl_ci": [0.0, 0.0],
            "verdict": "no evidence",
            "why": "identical trades",
        }
    _, a, b = np.intersect1d(full.minutes, without.minutes, return_indices=True)
    diff = full.pnl[a] - without.pnl[b]
    ci = _interval(diff[_blocks(len(diff), rng, resamples)].sum(axis=1))
    lo, hi = ci
    if lo is not None and lo > 0:
        verdict, why = "keep", "removing it lowers P&L"
    elif hi is not None and hi < 0:
        verdict, why = "remove", "removing it raises P&L"
    else:
        verdict, why = "no evidence", f"the {CONFIDENCE:.0%} interval of the difference holds 0"
    return {"delta_pnl": round(float(diff.sum()), 2), "delta_pnl_ci": ci, "verdict": verdict, "why": why}


# -- the run -----------------------------------------------------------------------------------
def run(
    settings: Settings,
    data: str,
    symbols: list[str],
    days: list[DaySource],
    report_dir: Path,
    train_days: int = 1,
    test_days: int = 1,
    news: list[Path] | None = None,
    promote: str = "gate",
    only: list[str] | None = None,
    resamples: int = 1000,
    seed: int = 7,
) -> dict[str, Any]:
    """The table: a row for the full system, one for removing nothing, one per component."""
    news = news or []
    available = components_of(settings)
    known = {c.name for c in available}
    if only:
        unknown = sorted(set(only) - known)
        if unknown:
            raise ValueError(
                f"not components of this configuration: {', '.join(unknown)} "
                f"(it has: {', '.join(sorted(known))})"
            )
        available = [c for c in available if c.name in only]
    folds = folds_of(days, train_days, test_days)
    registries = []
    training = []
    for k, (train, _) in enumerate(folds, start=1):
        registry = report_dir / f"fold-{k}" / "registry"
        log.info("ablation: training fold", fold=k, days=[d.date for d in train])
        training.append({"fold": k, **train_fold(train, settings, registry, promote)})
        registries.append(registry)

    # Each row's intervals from the same draws: rows of equal runs show equal intervals.
    def draws() -> np.random.Generator:
        return np.random.default_rng(seed)

    variants = [
        _Variant(FULL, "nothing (the reference)", settings, True, registries),
        _Variant(NOTHING, "nothing (a second run)", settings, True, registries),
    ]
    for c in available:
        without_settings = c.remove(settings)
        own = registries
        if c.retrain:  # the same folds, models trained without it
            own = []
            for k, (train, _) in enumerate(folds, start=1):
                registry = report_dir / f"fold-{k}-without-{c.name.replace(':', '-')}" / "registry"
                log.info("ablation: training fold without", fold=k, component=c.name)
                train_fold(train, without_settings, registry, promote)
                own.append(registry)
        variants.append(_Variant(c.name, c.what, without_settings, c.sentiment, own))
    runs = _every_variant(settings, folds, variants, news)
    full = runs[FULL]
    rows = [{"component": FULL, "removed": variants[0].what, **_metrics(full, draws(), resamples)}]
    reproduced = None
    for v in variants[1:]:
        without = runs[v.name]
        row = {"component": v.name, "removed": v.what, **_metrics(without, draws(), resamples)}
        row.update(_verdict(full, without, draws(), resamples))
        if v.name == NOTHING:
            reproduced = without.record == full.record
            row["verdict"] = "reproduces the full run" if reproduced else "DOES NOT reproduce the full run"
        rows.append(row)
    out = {
        "mode": "ablation",
        "data": mask_url(data),
        "symbols": symbols,
        "folds": [{"train": [d.date for d in tr], "test": [d.date for d in te]} for tr, te in folds],
        "training": training,
        "promote": promote,
        "resamples": resamples,
        "seed": seed,
        "confidence": CONFIDENCE,
        "block_minutes": BLOCK_MIN,
        "reproduced": reproduced,
        "rows": rows,
        "note": (
            f"{sum(len(te) for _, te in folds)} test day(s), {len(available)} component(s) each judged at "
            f"{CONFIDENCE:.0%}: about {len(available) * (1 - CONFIDENCE):.2f} verdicts other than 'no "
            "evidence' come from chance alone on average; on a few days, take one as a reason to test "
            "more days, not as evidence of an edge."
        ),
    }
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(out, indent=2, default=str))
    (report_dir / "report.html").write_text(render_html(out))
    return out


COLUMNS = (
    ("pnl", "P&L"),
    ("profit_factor", "profit factor"),
    ("sharpe", "Sharpe"),
    ("hit_rate", "hit rate"),
    ("cost_bps", "cost (bps)"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    value, ci = row.get(key), row.get(f"{key}_ci", [None, None])
    if value is None:
        return "-"
    band = "" if ci[0] is None else f"<br><small>[{ci[0]:g}, {ci[1]:g}]</small>"
    return f"{value:g}{band}"


def render_html(out: dict[str, Any]) -> str:
    """The version-history table, one row per component, in a page of its own (no scripts)."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in COLUMNS)
    body = []
    for row in out["rows"]:
        delta = row.get("delta_pnl")
        delta_cell = "-" if delta is None else f"{delta:+g}<br><small>{row['delta_pnl_ci']}</small>"
        cells = "".join(f"<td>{_cell(row, key)}</td>" for key, _ in COLUMNS)
        body.append(
            f"<tr><td>{html.escape(row['component'])}</td><td>{html.escape(row['removed'])}</td>{cells}"
            f"<td>{row['trades']}</td><td>{delta_cell}</td>"
            f"<td><b>{html.escape(str(row.get('verdict', '')))}</b><br><small>"
            f"{html.escape(str(row.get('why', '')))}</small></td></tr>"
        )
    folds = ", ".join(f"{'+'.join(f['train'])} -> {'+'.join(f['test'])}" for f in out["folds"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tradefleet ablation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}}
td:nth-child(1),td:nth-child(2){{text-align:left}}small{{color:#666}}</style></head>
<body><h1>Ablation</h1>
<p>Symbols {html.escape(", ".join(out["symbols"]))};
walk-forward folds (train -&gt; test): {html.escape(folds)};
models promoted by {html.escape(out["promote"])}. Intervals: {out["confidence"]:.0%} bootstrap
({out["resamples"]} resamples, blocks of {out["block_minutes"]} minutes; trades resampled for profit
factor and hit rate). Verdict: from full minus without, minute by minute.</p>
<p><b>{html.escape(out["note"])}</b></p>
<table id="ablation"><tr><th>component</th><th>removed</th>{head}<th>trades</th>
<th>P&amp;L the component added (full - without)</th><th>verdict</th></tr>
{"".join(body)}</table></body></html>
"""

"""The training report: report.json and a self-contained report.html (plots inlined as PNG).

It opens with one table across the horizons, then per horizon: the folds with intervals, the
calibration with each bin's row count, and the returns by prediction decile net of cost; the raw
configuration comes last. Times are New York time, as in the backtest."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from libs.common.markettime import NEW_YORK
from models.fastlane.evaluation import calibration_table, decile_returns
from models.fastlane.train import verdict_text
from models.shared import png

COST_NOTE = (
    "Net returns subtract each row's round-trip cost as the labels do: the quoted spread at the "
    "prediction (2 bps when no quote was seen) plus the commission on both sides "
    "(commission_bps per side in the training configuration below). Only labelled rows count: "
    "with fixed labels, rows whose move was smaller than their cost are left out of training and "
    "of this table, and those are where a strategy pays cost for nothing, so a decile's net figure "
    "is better than trading it would be. Rows are 1-minute vectors whose horizons overlap, not "
    "separate trades."
)
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:0.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f0f0f0}"
    "td.text{text-align:left}details pre{background:#f7f7f7;padding:1em}"
)


def tables(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The calibration and decile tables of one horizon's out-of-fold predictions."""
    oof = result["oof"]
    p, y = np.array(oof["p"], dtype=float), np.array(oof["y"], dtype=float)
    forward, cost = np.array(oof["forward"], dtype=float), np.array(oof["cost"], dtype=float)
    return {"calibration": calibration_table(p, y), "deciles": decile_returns(p, forward, cost)}


def write(report_dir: Path, results: list[dict[str, Any]], context: dict[str, Any]) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    report_dir.mkdir(parents=True, exist_ok=True)
    horizons = [{**{k: v for k, v in r.items() if k != "oof"}, **tables(r)} for r in results]
    written = dt.datetime.now(NEW_YORK).isoformat(timespec="seconds")
    json_path = report_dir / "report.json"
    document = {"written": written, "timezone": "America/New_York", "context": context, "horizons": horizons}
    json_path.write_text(json.dumps(document, indent=1))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>fastlane training report</title>"
        f"<style>{STYLE}</style></head><body><h1>Fast-lane training report</h1>"
        f"<p>Written {written}. All times are New York time. {context.get('vectors', '?')} feature "
        f"vectors of feature set {html.escape(str(context.get('feature_set', '?')))} from the "
        f"{html.escape(str(context.get('source', '?')))}. Every metric is out of fold: each row is "
        "scored by a model that never saw it (purged walk-forward).</p>"
        + _summary_table(horizons)
        + "".join(_horizon_section(h) for h in horizons)
        + "<h2>Configuration</h2><details><summary>training configuration and data source</summary>"
        f"<pre>{html.escape(json.dumps(context, indent=1))}</pre></details></body></html>"
    )
    html_path = report_dir / "report.html"
    html_path.write_text(page)
    return json_path, html_path


def _interval(summary: dict[str, Any], key: str) -> str:
    i = summary[f"{key}_interval"]
    return f"{i['mean']:.4f} [{i['low']:.4f}, {i['high']:.4f}]"


def _summary_table(horizons: list[dict[str, Any]]) -> str:
    rows = []
    for h in horizons:
        s, deciles = h["summary"], h["deciles"]
        verdict = h["promotion"]
        why = verdict_text(verdict).split(": ", 1)[-1]
        rows.append(
            f"<tr><td>{html.escape(h['horizon'])}</td><td class=text>{html.escape(h['version'])}</td>"
            f"<td>{h['rows']}</td><td>{len(h['folds'])}</td><td>{_interval(s, 'auc')}</td>"
            f"<td>{s['mean_hit_rate']:.4f}</td><td>{s['mean_ic']:.4f}</td>"
            f"<td>{s['mean_brier']:.4f} ({s['mean_base_brier']:.4f})</td>"
            f"<td>{s['mean_log_loss']:.4f} ({s['mean_base_log_loss']:.4f})</td>"
            f"<td>{deciles[-1]['net_long_bps']:+.2f}</td><td>{deciles[0]['net_short_bps']:+.2f}</td>"
            f"<td>{'yes' if verdict['promoted'] else 'no'}</td><td class=text>{html.escape(why)}</td></tr>"
        )
    return (
        "<h2>Summary</h2><p>Means over folds; AUC with its 95% t-interval over folds; the base rate's "
        "Brier score and log loss in brackets. The last two return columns: a long on the top decile "
        "and a short on the bottom decile of predicted probability, held for the horizon, net of "
        f"cost, mean bps per trade. {COST_NOTE}</p>"
        "<table><tr><th>horizon</th><th>version</th><th>rows</th><th>folds</th><th>AUC [95% CI]</th>"
        "<th>hit rate</th><th>IC</th><th>Brier (base)</th><th>log loss (base)</th>"
        "<th>top decile long, net bps</th><th>bottom decile short, net bps</th><th>promoted</th>"
        f"<th>why</th></tr>{''.join(rows)}</table>"
    )


def _horizon_section(h: dict[str, Any]) -> str:
    return (
        f"<h2>Horizon {html.escape(h['horizon'])} &middot; version {html.escape(h['version'])}</h2>"
        f"<p>{h['rows']} labelled rows ({h['neutral_rows']} moved less than their cost and were left "
        f"out), up share {h['up_share']:.3f}, from {html.escape(h['span'][0])} to "
        f"{html.escape(h['span'][1])}.</p>"
        f"<p><b>{html.escape(verdict_text(h['promotion']))}</b> (--promote "
        f"{html.escape(h['promotion']['mode'])})</p>"
        + _fold_table(h)
        + _zoo_section(h)
        + f'<img alt="per-fold metrics" src="{_fold_plot(h)}">'
        + _calibration_section(h)
        + _decile_section(h)
        + f'<h3>Feature importance</h3><img alt="importance" src="{_importance_plot(h)}">'
    )


def _zoo_section(h: dict[str, Any]) -> str:
    """A zoo's families, each out of fold on its own, and the blend's weights fold by fold (each
    fitted on the earlier folds only: the fold table above judges the blend)."""
    families = h.get("families") or {}
    if not families:
        return ""
    rows = "".join(
        f"<tr><td class=text>{html.escape(f)}</td><td>{_interval(s, 'auc')}</td>"
        f"<td>{_interval(s, 'log_loss')}</td><td>{_interval(s, 'base_log_loss')}</td>"
        f"<td>{_interval(s, 'hit_rate')}</td><td>{_interval(s, 'ic')}</td></tr>"
        for f, s in families.items()
    )
    names = list(families)
    weights = "".join(
        f"<tr><td>{fold['fold']}</td><td class=text>{html.escape(fold['blend']['method'])}</td>"
        + "".join(f"<td>{fold['blend']['weights'].get(n, 0.0):.3f}</td>" for n in names)
        + f"<td>{fold['blend']['temperature']:.2f}</td></tr>"
        for fold in h["folds"]
    )
    return (
        "<h3>Model families</h3><p>Each family on the same folds, means with their 95% t-interval. "
        "The ZooBalancer blends their calibrated logits with correlation-penalised ridge weights "
        "and a temperature of at least 1, fitted on earlier folds' out-of-fold rows only.</p>"
        "<table><tr><th>family</th><th>AUC</th><th>log loss</th><th>base log loss</th>"
        f"<th>hit rate</th><th>IC</th></tr>{rows}</table>"
        "<table><tr><th>fold</th><th>blend</th>"
        + "".join(f"<th>{html.escape(n)}</th>" for n in names)
        + f"<th>temperature</th></tr>{weights}</table>"
    )


def _fold_table(h: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{f['fold']}</td><td class=text>{html.escape(f['test_start'])} to "
        f"{html.escape(f['test_end'])}</td><td>{f['train_rows']}</td><td>{f['rows']}</td>"
        f"<td>{f['auc']:.4f} [{f['auc_low']:.4f}, {f['auc_high']:.4f}]</td><td>{f['log_loss']:.4f}</td>"
        f"<td>{f['base_log_loss']:.4f}</td><td>{f['brier']:.4f}</td><td>{f['base_brier']:.4f}</td>"
        f"<td>{f['hit_rate']:.4f}</td><td>{f['ic']:.4f}</td></tr>"
        for f in h["folds"]
    )
    s = h["summary"]
    mean_row = (
        "<tr><th colspan=4>mean [95% t-interval over folds]</th>"
        + "".join(
            f"<th>{_interval(s, k)}</th>"
            for k in ("auc", "log_loss", "base_log_loss", "brier", "base_brier", "hit_rate", "ic")
        )
        + "</tr>"
    )
    return (
        "<h3>Folds</h3><p>Each fold's AUC with a 95% bootstrap interval from its own out-of-fold "
        "predictions (500 resamples of its test rows). Rows are resampled one by one, but a "
        "horizon's labels overlap in time and the symbols share minutes: the rows are not "
        "independent, so these intervals are narrower than the truth. The spread across folds "
        "(the mean row's t-interval) is the sounder guide.</p>"
        "<table><tr><th>fold</th><th>test window</th><th>train rows</th><th>test rows</th>"
        "<th>AUC [95% CI]</th><th>log loss</th><th>base log loss</th><th>Brier</th><th>base Brier</th>"
        f"<th>hit rate</th><th>IC</th></tr>{rows}{mean_row}</table>"
    )


def _calibration_section(h: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{b['decile']}</td><td>{b['rows']}</td><td>{b['predicted']:.4f}</td>"
        f"<td>{b['observed']:.4f} [{b['observed_low']:.4f}, {b['observed_high']:.4f}]</td></tr>"
        for b in h["calibration"]
    )
    return (
        "<h3>Calibration</h3><p>Out-of-fold rows in ten equal groups by predicted probability; the "
        "observed up share with its 95% Wilson interval.</p><div style='display:flex;gap:2em'>"
        "<table><tr><th>decile</th><th>rows</th><th>mean predicted</th><th>observed up share [95% CI]</th>"
        f'</tr>{rows}</table><img alt="calibration" src="{_calibration_plot(h)}"></div>'
    )


def _decile_section(h: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{d['decile']}</td><td>{d['rows']}</td><td>{d['p_low']:.4f} to {d['p_high']:.4f}</td>"
        f"<td>{d['gross_bps']:+.2f}</td><td>{d['cost_bps']:.2f}</td><td>{d['net_long_bps']:+.2f}</td>"
        f"<td>{d['net_short_bps']:+.2f}</td></tr>"
        for d in h["deciles"]
    )
    return (
        "<h3>Returns by prediction decile, net of cost</h3><p>Mean forward return over the horizon "
        f"per decile of out-of-fold probability (1 lowest), in bps. {COST_NOTE}</p>"
        "<div style='display:flex;gap:2em'><table><tr><th>decile</th><th>rows</th>"
        "<th>probability</th><th>gross</th><th>round-trip cost</th><th>long, net</th><th>short, net</th>"
        f'</tr>{rows}</table><img alt="returns by decile" src="{_decile_plot(h)}"></div>'
    )


def _fold_plot(h: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    folds = h["folds"]
    xs = [f["fold"] for f in folds]
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.8))
    auc = np.array([f["auc"] for f in folds])
    # A percentile bootstrap interval need not contain the point estimate (a skewed resampled
    # AUC): the bar then shows no whisker on that side rather than a negative one.
    below = np.clip(auc - np.array([f["auc_low"] for f in folds]), 0.0, None)
    above = np.clip(np.array([f["auc_high"] for f in folds]) - auc, 0.0, None)
    axes[0].bar(xs, auc, color="#3572b0", yerr=[below, above], capsize=4)
    axes[0].axhline(0.5, color="k", linestyle="--", linewidth=0.8, label="no skill")
    axes[0].set_title("AUC with 95% bootstrap CI")
    axes[1].bar(xs, [f["log_loss"] for f in folds], color="#3572b0", label="model")
    axes[1].plot(xs, [f["base_log_loss"] for f in folds], "k--", label="base rate")
    if any("active_log_loss" in f for f in folds):
        axes[1].plot(xs, [f.get("active_log_loss", np.nan) for f in folds], "r:", label="active")
    axes[1].set_title("log loss")
    for ax, key, title in ((axes[2], "hit_rate", "hit rate"), (axes[3], "ic", "IC")):
        ax.bar(xs, [f[key] for f in folds], color="#3572b0")
        ax.axhline(0.5 if key == "hit_rate" else 0.0, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(title)
    for ax in axes:
        ax.set_xlabel("fold")
        ax.set_xticks(xs)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    return png(fig)


def _calibration_plot(h: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    bins = h["calibration"]
    fig, ax = plt.subplots(figsize=(4.2, 4))
    xs, ys = [b["predicted"] for b in bins], [b["observed"] for b in bins]
    errors = [
        [max(b["observed"] - b["observed_low"], 0.0) for b in bins],
        [max(b["observed_high"] - b["observed"], 0.0) for b in bins],
    ]
    counts = sorted({b["rows"] for b in bins})
    per_bin = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    # Equal-count bins: one count range in the legend reads better than a label on every point.
    ax.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=f"observed, 95% CI ({per_bin} rows per bin)")
    low, high = min([*xs, *ys], default=0.0) - 0.05, max([*xs, *ys], default=1.0) + 0.05
    ax.plot([low, high], [low, high], "k--", linewidth=0.8, label="perfect")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed up share")
    ax.set_title("calibration (out of fold)")
    ax.legend(fontsize=7)
    return png(fig)


def _decile_plot(h: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    deciles = h["deciles"]
    xs = np.array([d["decile"] for d in deciles])
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(xs - 0.2, [d["net_long_bps"] for d in deciles], width=0.4, color="#3f8f4f", label="long, net")
    ax.bar(xs + 0.2, [d["net_short_bps"] for d in deciles], width=0.4, color="#b04a35", label="short, net")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(xs)
    ax.set_xlabel("decile of predicted probability (1 lowest)")
    ax.set_ylabel("mean return net of cost, bps")
    ax.set_title("returns by prediction decile")
    ax.legend(fontsize=7)
    return png(fig)


def _importance_plot(h: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    top = h["importance"][:15][::-1]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([n for n, _ in top], [g for _, g in top], color="#6a9f58")
    ax.set_xlabel("total gain")
    ax.set_title("feature importance (gain)")
    return png(fig)

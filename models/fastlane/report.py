"""The training report: report.json and a self-contained report.html (plots inlined as PNG)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from models.shared import png


def _fold_plot(result: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    folds = result["folds"]
    xs = [f["fold"] for f in folds]
    fig, axes = plt.subplots(1, 4, figsize=(14, 2.8))
    for ax, key, ref in zip(axes, ("auc", "log_loss", "hit_rate", "ic"), (0.5, None, 0.5, 0.0), strict=True):
        ax.bar(xs, [f[key] for f in folds], color="#3572b0")
        if key == "log_loss":
            ax.plot(xs, [f["base_log_loss"] for f in folds], "k--", label="base rate")
            if any("active_log_loss" in f for f in folds):
                ax.plot(xs, [f.get("active_log_loss", np.nan) for f in folds], "r:", label="active")
            ax.legend(fontsize=7)
        elif ref is not None:
            ax.axhline(ref, color="k", linestyle="--", linewidth=0.8)
        ax.set_title(key.upper() if key in ("auc", "ic") else key.replace("_", " "))
        ax.set_xlabel("fold")
    return png(fig)


def _importance_plot(result: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    top = result["importance"][:15][::-1]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.barh([n for n, _ in top], [g for _, g in top], color="#6a9f58")
    ax.set_title("feature importance (gain)")
    return png(fig)


def _calibration_plot(result: dict[str, Any]) -> str:
    import matplotlib.pyplot as plt

    p, y = np.array(result["oof"]["p"]), np.array(result["oof"]["y"])
    fig, ax = plt.subplots(figsize=(4, 4))
    if len(p):
        bins = np.quantile(p, np.linspace(0, 1, 11))
        idx = np.clip(np.searchsorted(bins, p, side="right") - 1, 0, 9)
        xs = [p[idx == b].mean() for b in range(10) if (idx == b).any()]
        ys = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        ax.plot(xs, ys, "o-")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("observed up share")
    ax.set_title("calibration (out of fold)")
    return png(fig)


def write(report_dir: Path, results: list[dict[str, Any]], context: dict[str, Any]) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    report_dir.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if k != "oof"} for r in results]
    json_path = report_dir / "report.json"
    json_path.write_text(json.dumps({"context": context, "horizons": slim}, indent=1))
    sections = []
    for r in results:
        s = r["summary"]
        verdict = r["promotion"]
        rows = "".join(
            f"<tr><td>{f['fold']}</td><td>{f['train_rows']}</td><td>{f['rows']}</td><td>{f['auc']:.4f}</td>"
            f"<td>{f['log_loss']:.4f}</td><td>{f['base_log_loss']:.4f}</td><td>{f['hit_rate']:.4f}</td>"
            f"<td>{f['ic']:.4f}</td></tr>"
            for f in r["folds"]
        )
        sections.append(
            f"<h2>horizon {html.escape(r['horizon'])} &middot; version {html.escape(r['version'])}</h2>"
            f"<p>{r['rows']} labelled rows ({r['neutral_rows']} neutral left out), up share "
            f"{r['up_share']:.3f}, span {html.escape(' to '.join(r['span']))}. Mean out-of-fold AUC "
            f"{s['mean_auc']:.4f}, log loss {s['mean_log_loss']:.4f} "
            f"(base rate {s['mean_base_log_loss']:.4f}), "
            f"hit rate {s['mean_hit_rate']:.4f}, IC {s['mean_ic']:.4f}.</p>"
            f"<p><b>{'promoted' if verdict['promoted'] else 'not promoted'}</b> "
            f"({html.escape(verdict['mode'])}) {html.escape('; '.join(verdict['reasons']))}</p>"
            "<table><tr><th>fold</th><th>train rows</th><th>test rows</th><th>AUC</th><th>log loss</th>"
            f"<th>base log loss</th><th>hit rate</th><th>IC</th></tr>{rows}</table>"
            f'<img alt="per-fold metrics" src="{_fold_plot(r)}">'
            f'<div><img alt="importance" src="{_importance_plot(r)}">'
            f'<img alt="calibration" src="{_calibration_plot(r)}"></div>'
        )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>fastlane training report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>fastlane training report</h1><pre>{html.escape(json.dumps(context, indent=1))}</pre>"
        + "".join(sections)
        + "</body></html>"
    )
    html_path = report_dir / "report.html"
    html_path.write_text(page)
    return json_path, html_path

"""The sentiment training report: report.json and a self-contained report.html (plots inlined)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from models.sentiment.serving import LABELS
from models.shared import png


def _plots(meta: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = meta["held_out"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    ax = axes[0]
    matrix = held["confusion"]
    ax.imshow(matrix, cmap="Blues")
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(3), LABELS)
    ax.set_yticks(range(3), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion (held out)")
    ax = axes[1]
    bins = held["reliability"]
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="#3572b0")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"calibration (ECE {held['ece']:.3f})")
    ax = axes[2]
    curve = meta["learning_curve"]
    ax.plot([c["epoch"] for c in curve], [c["valid_accuracy"] for c in curve], "o-", label="valid accuracy")
    ax2 = ax.twinx()
    ax2.plot([c["epoch"] for c in curve], [c["train_loss"] for c in curve], "s--", color="#b04a35")
    ax.set_xlabel("epoch")
    ax.set_title("learning curve (loss dashed)")
    return f'<img src="{png(fig)}" alt="confusion, calibration, learning curve">'


def write_report(meta: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(meta, indent=2))
    held, ref = meta["held_out"], meta["reference_tfidf_logreg"]
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{e.get('accuracy', float('nan')):.4f}</td>"
        f"<td>{e.get('p50_ms', float('nan')):.2f}</td><td>{e.get('p99_ms', float('nan')):.2f}</td>"
        f"<td>{e.get('batch16_per_headline_ms', float('nan')):.2f}</td></tr>"
        if "error" not in e
        else f"<tr><td>{html.escape(name)}</td><td colspan=4>{html.escape(e['error'])}</td></tr>"
        for name, e in meta.get("engines", {}).items()
    )
    classes = "".join(
        f"<tr><td>{n}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>"
        f"<td>{c['support']}</td></tr>"
        for n, c in held["per_class"].items()
    )
    engine = meta.get("serving", {}).get("engine", "?")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sentiment {meta["version"]}</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:2px 10px;text-align:right}}</style></head><body>
<h1>Sentiment model {html.escape(meta["version"])}</h1>
<p>Base {html.escape(meta["base"]["model"])}, LoRA rank {meta["lora_rank"]},
temperature {meta["temperature"]:.2f}; trained on {meta["data"]["train"]} tweets,
validated on {meta["data"]["valid"]}, held out {meta["data"]["test"]}.
Served engine: <b>{html.escape(engine)}</b>. Promoted: {meta.get("promoted")}.</p>
<table><tr><th></th><th>accuracy</th><th>macro-F1</th><th>log loss</th><th>ECE</th></tr>
<tr><td>this model (held out)</td><td>{held["accuracy"]:.4f}</td><td>{held["macro_f1"]:.4f}</td>
<td>{held["log_loss"]:.4f}</td><td>{held["ece"]:.4f}</td></tr>
<tr><td>TF-IDF + logistic regression</td><td>{ref["accuracy"]:.4f}</td><td>{ref["macro_f1"]:.4f}</td>
<td>{ref["log_loss"]:.4f}</td><td>{ref["ece"]:.4f}</td></tr></table>
<h2>Per class</h2>
<table><tr><th></th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{classes}</table>
<h2>Engines (held-out accuracy; latency per headline, ms)</h2>
<table><tr><th></th><th>accuracy</th><th>p50</th><th>p99</th><th>batch of 16</th></tr>{rows}</table>
{_plots(meta)}
</body></html>"""
    (folder / "report.html").write_text(page)

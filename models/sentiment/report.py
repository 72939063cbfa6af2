"""The sentiment training report: report.json and a self-contained report.html (plots inlined)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from models.sentiment.serving import LABELS
from models.shared import svg


def contrast_ratio(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """WCAG contrast ratio of two sRGB colours (components 0-1): 4.5 is legible body text."""

    def luminance(rgb: tuple[float, float, float]) -> float:
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


def _confusion_table(matrix: list[list[int]]) -> str:
    """The held-out confusion matrix as an HTML table: each cell shaded by its share of the true
    class, its text black or white, whichever contrasts more with that shade."""
    from matplotlib import colormaps

    blues = colormaps["Blues"]
    black, white = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in LABELS)
    body = []
    for name, row in zip(LABELS, matrix, strict=True):
        total = sum(row) or 1
        cells = []
        for count in row:
            share = count / total
            red, green, blue, _ = blues(0.1 + 0.85 * share)  # never white: an empty cell stays visible
            fill = (float(red), float(green), float(blue))
            ink = max((black, white), key=lambda c: contrast_ratio(c, fill))
            cells.append(
                f'<td class="cell" style="background:{_hex(fill)};color:{_hex(ink)}">'
                f"{count}<br><small>{share:.0%} of row</small></td>"
            )
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    return (
        "<h2>Confusion matrix (held out)</h2><p>Rows: the true label; columns: the predicted one. "
        "Each cell: the count, and its share of the true label's row.</p>"
        f'<table class="confusion"><tr><th>true \\ predicted</th>{head}</tr>{"".join(body)}</table>'
    )


def _plots(meta: dict[str, Any]) -> str:
    """Calibration and learning curve as inline SVG, their text kept as text (searchable, sharp)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held = meta["held_out"]
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig, (calibration, learning) = plt.subplots(1, 2, figsize=(11, 3.8))
        bins = held["reliability"]
        calibration.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect")
        calibration.plot(
            [b["confidence"] for b in bins],
            [b["accuracy"] for b in bins],
            "o-",
            color="#3572b0",
            label="model",
        )
        calibration.set_xlabel("confidence (top class probability)")
        calibration.set_ylabel("accuracy")
        calibration.set_title(f"calibration, held out (ECE {held['ece']:.3f})")
        calibration.legend(loc="upper left", fontsize=8)
        _learning_curve(learning, meta["learning_curve"])
        fig.tight_layout()
        return svg(fig)


def _learning_curve(ax: Any, curve: list[dict[str, Any]]) -> None:
    epochs = [c["epoch"] for c in curve]
    accuracy = ax.plot(
        epochs, [c["valid_accuracy"] for c in curve], "o-", color="#3572b0", label="validation accuracy"
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_xticks(epochs)
    loss_ax = ax.twinx()
    loss = loss_ax.plot(
        epochs, [c["train_loss"] for c in curve], "s--", color="#b04a35", label="training loss"
    )
    loss_ax.set_ylabel("training loss (cross-entropy)")
    ax.set_title("learning curve")
    lines = accuracy + loss  # one legend for both axes
    ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)


def _class_rows(per_class: dict[str, dict[str, Any]]) -> str:
    return "".join(
        f"<tr><td>{n}</td><td>{c['precision']:.3f}</td><td>{c['recall']:.3f}</td><td>{c['f1']:.3f}</td>"
        f"<td>{c['support']}</td></tr>"
        for n, c in per_class.items()
    )


def _news_section(news: dict[str, Any] | None) -> str:
    """News-style sentences (models/sentiment/news_eval.py): what labelled them, the figures."""
    if not news:
        return ""
    classes = _class_rows(news["per_class"])
    return f"""<h2>News headlines (another domain)</h2>
<p>{news["n"]} headlines labelled by the analyst action they report ({html.escape(news["source"])}),
scored by the served engine ({html.escape(news["engine"])}), after the tweets' temperature.
No neutral class: a neutral answer counts as a miss.</p>
<table><tr><th>accuracy</th><th>answered neutral</th><th>directional accuracy</th><th>macro-F1</th>
<th>log loss</th><th>ECE</th></tr>
<tr><td>{news["accuracy"]:.4f}</td><td>{news["answered_neutral"]:.3f}</td>
<td>{news["directional_accuracy"]:.4f}</td><td>{news["macro_f1"]:.4f}</td><td>{news["log_loss"]:.4f}</td>
<td>{news["ece"]:.4f}</td></tr></table>
<table><tr><th></th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{classes}</table>"""


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
    classes = _class_rows(held["per_class"])
    engine = meta.get("serving", {}).get("engine", "?")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sentiment {meta["version"]}</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:2px 10px;text-align:right}}
table.confusion td{{text-align:center;min-width:7em}}</style></head><body>
<h1>Sentiment model {html.escape(meta["version"])}</h1>
<p>Base {html.escape(meta["base"]["model"])}, LoRA rank {meta["lora_rank"]},
temperature {meta["temperature"]:.2f}; trained on {meta["data"]["train"]} tweets,
validated on {meta["data"]["valid"]}, held out {meta["data"]["test"]}.
Served engine: <b>{html.escape(engine)}</b>. Promoted: {meta.get("promoted")}
({html.escape(str(meta.get("promotion", {}).get("why", "")))}).</p>
<table><tr><th></th><th>accuracy</th><th>macro-F1</th><th>log loss</th><th>ECE</th></tr>
<tr><td>this model (held out)</td><td>{held["accuracy"]:.4f}</td><td>{held["macro_f1"]:.4f}</td>
<td>{held["log_loss"]:.4f}</td><td>{held["ece"]:.4f}</td></tr>
<tr><td>TF-IDF + logistic regression</td><td>{ref["accuracy"]:.4f}</td><td>{ref["macro_f1"]:.4f}</td>
<td>{ref["log_loss"]:.4f}</td><td>{ref["ece"]:.4f}</td></tr></table>
<h2>Per class</h2>
<table><tr><th></th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{classes}</table>
<h2>Engines (held-out accuracy; latency per headline, ms)</h2>
<table><tr><th></th><th>accuracy</th><th>p50</th><th>p99</th><th>batch of 16</th></tr>{rows}</table>
{_confusion_table(held["confusion"])}
{_news_section(meta.get("news"))}
{_plots(meta)}
</body></html>"""
    (folder / "report.html").write_text(page)

"""The policy's training report: report.json and a self-contained report.html (the learning curve
inlined as PNG, the held-out evaluation per tape against the rule-based sizing)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from models.shared import png


def _curve_plot(meta: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = meta["learning_curve"]
    steps = [c["timesteps"] for c in curve]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    train = [(c["timesteps"], c["train_reward"]) for c in curve if c["train_reward"] is not None]
    if train:
        ax.plot(*zip(*train, strict=True), "o-", color="#3572b0", label="training episodes (mean reward)")
    ax.plot(
        steps, [c["held_out_reward"] for c in curve], "s-", color="#c0392b", label="held-out tapes, policy"
    )
    ax.axhline(
        meta["evaluation"]["rules"]["mean_reward"], color="k", linestyle="--", label="held-out tapes, rules"
    )
    ax.set_xlabel("timesteps (decisions)")
    ax.set_ylabel("episode reward (bps of notional)")
    ax.legend(fontsize=8)
    ax.set_title(f"{meta['algorithm'].upper()} learning curve")
    return png(fig)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r.values()) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def write(folder: Path, meta: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(
        json.dumps({k: v for k, v in meta.items() if k != "probes"}, indent=1)
    )
    ev = meta["evaluation"]
    summary = [{"sizing": name, **ev[name]} for name in ("policy", "rules")]
    title = html.escape(meta["version"])
    promotion = html.escape(json.dumps(meta.get("promotion", {})))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>policy {title}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}</style></head><body>
<h1>RL policy {html.escape(meta["version"])}</h1>
<p>{html.escape(meta["algorithm"].upper())}, {meta["config"]["timesteps"]} timesteps, {meta["elapsed_s"]} s.
Trained on {len(meta["train_tapes"])} symbol-days, evaluated on {len(meta["held_out_tapes"])} held back:
{html.escape(", ".join(meta["held_out_tapes"]))}. Promotion: {promotion}.
Inference (ONNX Runtime, one row): {html.escape(json.dumps(meta.get("inference_us", {})))} us.</p>
<h2>Learning curve</h2><img src="{_curve_plot(meta)}" alt="learning curve">
<h2>Held-out evaluation</h2>{_table(summary)}
<h3>Per tape, policy</h3>{_table(ev["per_tape"]["policy"])}
<h3>Per tape, rules (every proposal at full size)</h3>{_table(ev["per_tape"]["rules"])}
</body></html>"""
    path = folder / "report.html"
    path.write_text(page)
    return path

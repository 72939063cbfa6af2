"""The sentiment model on news-style headlines, with labels nobody assigned by reading them.

The training tweets are one domain; the fleet also reads wire headlines. To measure the model
there without hand-labelling an evaluation set (or labelling it with another model, which only
measures agreement), this uses the headlines whose direction is an event, not an opinion: an
analyst's action on a stock, as Benzinga titles it.

- positive: an upgrade ("Goldman Sachs Upgrades Acme to Buy": the verb, not a mention of "an
  upgrade") or a raised price target;
- negative: a downgrade or a lowered (cut) price target;
- left out: anything else, roundups ("Top Upgrades, Downgrades For ..."), and titles naming
  actions both ways ("Upgrades ..., Lowers Price Target").

Why it is a fair label: the action's direction is what the headline reports, and the market
reads it that way (upgrades and target raises are followed by positive abnormal returns on
average, downgrades by negative ones: Womack 1996, Brav and Lehavy 2003). What it does not give:
a neutral class (a "Maintains Neutral" headline is not a neutral one in the tweets' sense), nor
the other kinds of news. So the figures are two-way: accuracy with a neutral answer counted as a
miss, the share answered neutral, and accuracy among the directional answers; calibration (after
the tweets' temperature) on the same rows.

The data: ../shared/data/news/benzinga_headlines (vendor content, not shipped: read from a path
given on the command line, ``tradefleet train sentiment --news-eval PATH``).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from models.sentiment.serving import LABELS, Scorer

NEGATIVE, POSITIVE = LABELS.index("negative"), LABELS.index("positive")
NEUTRAL = LABELS.index("neutral")

_UP = re.compile(r"\bupgrade[sd]\b|\braise[sd]? (?:its |the )?(?:price target|pt)\b", re.IGNORECASE)
_DOWN = re.compile(
    r"\bdowngrade[sd]\b|\b(?:lower(?:s|ed)?|cut(?:s)?) (?:its |the )?(?:price target|pt)\b", re.IGNORECASE
)
_ROUNDUP = re.compile(r"\bupgrades,? downgrades\b|\btop upgrades\b|\btop downgrades\b", re.IGNORECASE)


def analyst_action_label(title: str) -> int | None:
    """The direction of the analyst action a headline reports (``LABELS`` index), or None when
    it reports none, or actions both ways, or is a roundup of many."""
    if _ROUNDUP.search(title):
        return None
    up, down = bool(_UP.search(title)), bool(_DOWN.search(title))
    if up == down:
        return None
    return POSITIVE if up else NEGATIVE


def load_analyst_headlines(path: Path) -> tuple[list[str], np.ndarray]:
    """The distinct headlines of a Benzinga CSV (``title`` column; a folder: its
    analyst_ratings CSV) that report an analyst action one way, with that direction."""
    if path.is_dir():
        found = sorted(path.glob("analyst_ratings*.csv"))
        if not found:
            raise FileNotFoundError(f"no analyst_ratings*.csv in {path}")
        path = found[0]
    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            title = (row.get("title") or "").strip()
            if not title or title in seen:
                continue
            seen.add(title)
            label = analyst_action_label(title)
            if label is not None:
                texts.append(title)
                labels.append(label)
    if not texts:
        raise ValueError(f"{path}: no headline reports an analyst action")
    return texts, np.array(labels, dtype=np.int64)


def evaluate(scorer: Scorer, texts: list[str], labels: np.ndarray, batch: int = 64) -> dict[str, Any]:
    """The served model on the analyst-action headlines: two-way figures, per class, and the
    calibration of its confidence (after its temperature)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    from models.sentiment.train import metrics

    probs = np.concatenate([scorer.predict(texts[i : i + batch])[0] for i in range(0, len(texts), batch)])
    pred = probs.argmax(1)
    directional = pred != NEUTRAL
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=[NEGATIVE, POSITIVE], zero_division=0
    )
    calibration = metrics(probs, labels)
    macro_f1 = f1_score(labels, pred, labels=[NEGATIVE, POSITIVE], average="macro", zero_division=0)
    return {
        "source": "analyst actions in Benzinga headlines (upgrade / raised target: positive; "
        "downgrade / lowered target: negative)",
        "n": len(labels),
        "positive": int((labels == POSITIVE).sum()),
        "negative": int((labels == NEGATIVE).sum()),
        "accuracy": float((pred == labels).mean()),  # a neutral answer is a miss
        "answered_neutral": float((~directional).mean()),
        "directional_accuracy": float((pred == labels)[directional].mean()) if directional.any() else 0.0,
        "macro_f1": float(macro_f1),
        "per_class": {
            LABELS[c]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for c, p, r, f, n in zip((NEGATIVE, POSITIVE), precision, recall, f1, support, strict=True)
        },
        "ece": calibration["ece"],
        "log_loss": calibration["log_loss"],
        "reliability": calibration["reliability"],
        "confusion": calibration["confusion"],  # rows: truth (negative, neutral, positive)
    }

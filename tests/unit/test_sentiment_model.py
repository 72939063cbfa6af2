"""The sentiment model: our encoder is BERT exactly; a short training run goes end to end into a
registry with its report; a FinBERT-class folder is served with its labels mapped; the shipped
model on tweets it never saw in training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.sentiment import serving
from models.sentiment.encoder import EncoderConfig, SentimentNet
from models.sentiment.serving import LABELS, HfScorer, Tokens, default_base_dir
from models.sentiment.train import DEFAULT_DATA, SentimentTrainConfig, _promote, load_tweets, split, train
from tests.helpers import REPO

SHIPPED = REPO / "models" / "registry"


def test_our_encoder_is_bert_to_the_last_decimal() -> None:
    import transformers

    base = default_base_dir()
    ours = SentimentNet(EncoderConfig.from_dir(base), rank=4)
    ours.load_base(base)
    ours.eval()
    ref = transformers.AutoModel.from_pretrained(str(base), local_files_only=True).eval()
    ids, mask = Tokens(base, 64)(["IBM beats estimates, raises guidance", "BofA cut to sell", "ok"])
    x, m = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        pooled = ours.pooled(x, m)
        hidden = ref(input_ids=x, attention_mask=m).last_hidden_state
        w = m.unsqueeze(-1).float()
        expected = (hidden * w).sum(1) / w.sum(1)
    assert float((pooled - expected).abs().max()) < 1e-4  # LoRA's B starts at zero: no change yet
    before = {n: p.clone() for n, p in ours.named_parameters() if "lora_" not in n}
    with torch.no_grad():
        for layer in ours.layers:
            layer.query.lora_b.fill_(0.01)
    ours.merge()  # adapters folded into the weights: plain linear layers, same outputs
    assert not any("lora_" in n for n, _ in ours.named_parameters())
    assert not torch.equal(before["layers.0.query.weight"], ours.layers[0].query.weight)


def test_a_short_training_run_registers_a_model_with_its_report(tmp_path: Path) -> None:
    cfg = SentimentTrainConfig(
        epochs=1, lora_rank=2, limit=160, engines=("torch", "onnx-int8"), latency_samples=5, promote="gate"
    )
    meta = train(DEFAULT_DATA, tmp_path, cfg, tmp_path / "report", progress=False)
    version = meta["version"]
    folder = tmp_path / "sentiment" / version
    assert (folder / "delta.safetensors").stat().st_size < 2_000_000  # adapters, not the encoder
    assert meta["promoted"] and serving.active_version(tmp_path) == version  # first: nothing to beat
    assert meta["data"] == {"path": str(DEFAULT_DATA), "rows": 160, "train": 115, "valid": 13, "test": 32}
    held = meta["held_out"]
    assert 0 <= held["accuracy"] <= 1 and len(held["confusion"]) == 3 and held["reliability"]
    assert sum(map(sum, held["confusion"])) == 32
    assert set(meta["engines"]) == {"torch", "onnx-int8"} and meta["serving"]["engine"] in meta["engines"]
    assert "accuracy" in meta["reference_tfidf_logreg"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "<svg" in html and version in html  # figures inline, as text-searchable SVG
    assert json.loads((folder / "report.json").read_text())["version"] == version
    # The registry's model serves, and reproduces its probes (checked inside load_version).
    scorer = serving.load_version(tmp_path, version, "torch", tmp_path / "cache")
    probs, pooled = scorer.predict(["$IBM beats", "$BAC misses"])
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1) and pooled is not None

    # The gate scores the active version on the candidate's own held-out rows and promotes only
    # a candidate that beats it there. The candidates below are the same weights (so the active
    # scores exactly ``best`` on those rows) claiming other accuracies.
    texts, labels = load_tweets(DEFAULT_DATA)
    keep = np.random.default_rng(cfg.seed).permutation(len(texts))[: cfg.limit]
    texts, labels = [texts[i] for i in keep], labels[keep]
    _, _, test = split(labels, cfg)
    rows_texts, rows_labels = [texts[i] for i in test], labels[test]

    def candidate(name: str, accuracy: float) -> str:
        shutil.copytree(folder, folder.parent / name)
        m = json.loads((folder.parent / name / "meta.json").read_text())
        m["held_out"]["accuracy"] = accuracy
        (folder.parent / name / "meta.json").write_text(json.dumps(m))
        return name

    def gate(name: str, accuracy: float, how: str = "gate") -> dict[str, Any]:
        return _promote(tmp_path, name, accuracy, how, rows_texts, rows_labels)

    best = held["accuracy"]
    worse = gate(candidate("worse", best - 0.01), best - 0.01)
    assert not worse["promoted"] and worse["active_accuracy"] == pytest.approx(best)
    assert f"does not beat the active {version}" in worse["why"] and "same 32 rows" in worse["why"]
    tie = gate(candidate("tie", best), best)
    assert not tie["promoted"]  # a tie keeps the model that is serving
    assert serving.active_version(tmp_path) == version
    better = gate(candidate("better", best + 0.01), best + 0.01)
    assert better["promoted"] and better["previous_active"] == version and "beats the active" in better["why"]
    assert serving.active_version(tmp_path) == "better"
    assert not gate(candidate("forced", 0.0), 0.0, "never")["promoted"]
    assert gate("forced", 0.0, "force")["promoted"] and serving.active_version(tmp_path) == "forced"


def test_a_model_that_does_not_reproduce_its_probes_is_refused(tmp_path: Path) -> None:
    version = serving.active_version(SHIPPED)
    assert version is not None
    shutil.copytree(SHIPPED / "sentiment", tmp_path / "sentiment")
    meta_path = tmp_path / "sentiment" / version / "meta.json"
    meta = json.loads(meta_path.read_text())
    for probes in meta["probes"].values():
        for p in probes:
            p["probs"] = p["probs"][::-1]  # what another model would say
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(serving.ModelUnavailable, match="probes"):
        serving.load_version(tmp_path, version, "torch", tmp_path / "cache")
    with pytest.raises(serving.ModelUnavailable, match="probes"):  # auto tries every engine
        serving.load_version(tmp_path, version, "auto", tmp_path / "cache")


def test_auto_falls_back_when_this_cpu_misses_the_int8_probes(tmp_path: Path) -> None:
    """int8 kernels differ by CPU: where the served int8 engine misses its probes, auto serves the
    next engine that reproduces its own (an explicit engine is refused instead)."""
    version = serving.active_version(SHIPPED)
    assert version is not None
    shutil.copytree(SHIPPED / "sentiment", tmp_path / "sentiment")
    meta_path = tmp_path / "sentiment" / version / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["serving"]["engine"] = "onnx-int8"
    for p in meta["probes"]["onnx-int8"]:
        p["probs"] = p["probs"][::-1]  # what this CPU's int8 kernels fail to give
    meta_path.write_text(json.dumps(meta))
    cache = REPO / "var" / "sentiment-cache"  # the exports are the shipped version's: shared
    scorer = serving.load_version(tmp_path, version, "auto", cache)
    assert scorer.engine == "onnx"
    with pytest.raises(serving.ModelUnavailable, match="probes"):
        serving.load_version(tmp_path, version, "onnx-int8", cache)


def test_a_finbert_class_folder_is_served_with_its_labels_mapped(tmp_path: Path) -> None:
    import transformers

    base = default_base_dir()
    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "positive", 1: "negative", 2: "neutral"},  # FinBERT's order, not ours
        label2id={"positive": 0, "negative": 1, "neutral": 2},
    )
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))  # always "negative"
    model.save_pretrained(tmp_path / "finbert-like")
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(base / name, tmp_path / "finbert-like" / name)
    scorer = HfScorer(tmp_path / "finbert-like")
    probs, _ = scorer.predict(["Shares jump after the deal", "Flat day"])
    assert [LABELS[i] for i in probs.argmax(1)] == ["negative", "negative"]
    assert scorer.version == "hf:finbert-like"


def test_the_shipped_model_on_held_out_tweets() -> None:
    """Every tweet of the held-out split (seed 0), never seen in training, through the served
    engine: what training recorded, and better than TF-IDF + logistic regression on that split."""
    from sklearn.metrics import f1_score

    version = serving.active_version(SHIPPED)
    assert version is not None, "a sentiment model ships in models/registry"
    meta = serving.read_meta(SHIPPED, version)
    texts, labels = load_tweets(DEFAULT_DATA)
    keys = ("seed", "test_size", "valid_size")
    _, _, test = split(labels, SentimentTrainConfig(**{k: meta["config"][k] for k in keys}))
    assert len(test) == meta["data"]["test"]
    scorer = serving.load_version(SHIPPED, version, "auto", REPO / "var" / "sentiment-cache")
    chunks = [scorer.predict([texts[i] for i in test[k : k + 128]])[0] for k in range(0, len(test), 128)]
    predicted = np.concatenate(chunks).argmax(1)
    accuracy = float((predicted == labels[test]).mean())
    macro_f1 = float(f1_score(labels[test], predicted, average="macro"))
    served = meta["engines"][scorer.engine]["accuracy"]  # auto may fall back on this CPU
    assert abs(accuracy - served) < 0.005
    assert accuracy > meta["reference_tfidf_logreg"]["accuracy"] and accuracy > 0.83
    assert macro_f1 > meta["reference_tfidf_logreg"]["macro_f1"] and macro_f1 > 0.78

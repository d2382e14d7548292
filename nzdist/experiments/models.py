"""The byte-level GPT every parity run trains (the Hugging Face models are in ``hf``).

The GPT is small and written out (no ``transformers``), so a run's weights depend only on the seed; its
``Block`` is the FSDP2 group boundary (``TransformerLayerPolicy({Block})``) in every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 256  # bytes
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    seq_len: int = 64

    @classmethod
    def of(cls, cfg) -> ModelConfig:
        """The model an :class:`~nzdist.experiments.config.ExperimentConfig` describes."""
        return cls(d_model=cfg.d_model, n_layer=cfg.n_layer, n_head=cfg.n_head, seq_len=cfg.seq_len)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.out = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def forward(self, idx, targets):
        x = self.embed(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def build_model(cfg: ModelConfig, seed: int) -> GPT:
    torch.manual_seed(seed)  # every rank and every backend starts from the same weights
    return GPT(cfg)


def freeze_params(model: nn.Module, prefixes: tuple) -> None:
    """Freeze every parameter whose name starts with one of ``prefixes`` (e.g. ``("embed", "blocks.0")``)."""
    for name, p in model.named_parameters():
        if any(name.startswith(pre) for pre in prefixes):
            p.requires_grad_(False)

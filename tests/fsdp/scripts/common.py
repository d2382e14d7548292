"""Shared by the torchrun helper scripts: process group, a tiny GPT, data, and bit-exact comparisons."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from support import bits, same_bits  # noqa: F401 - the scripts import them from here
from support import emit as emit_result


def init() -> tuple[int, int]:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def mesh():
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (dist.get_world_size(),))


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).transpose(1, 3).unbind(2)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class TinyGPT(nn.Module):
    """Vocabulary 83 and width 36: dim 0 of the embedding, head and biases does not divide 2 or 4 ranks...
    36 does (qkv 108, fc1 144 rows divide), 83 does not: both even and uneven shards are exercised."""

    def __init__(self, vocab: int = 83, d: int = 36, layers: int = 2, heads: int = 3, ctx: int = 16):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=True)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def batches(rank: int, steps: int, vocab: int = 83, batch: int = 2, ctx: int = 16):
    g = torch.Generator().manual_seed(1000 + rank)
    for _ in range(steps):
        x = torch.randint(0, vocab, (batch, ctx + 1), generator=g)
        yield x[:, :-1], x[:, 1:]


def full_params(model) -> dict:
    """Every parameter gathered to a dense full tensor (a collective: call on every rank)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for k, v in model.state_dict().items():
        out[k] = v.full_tensor() if isinstance(v, DTensor) else v
    return out


def emit(result: dict) -> None:
    """support.emit (every rank's result to $NZ_RESULT), plus this rank's summary on stderr for the test log."""
    emit_result(result)
    print(json.dumps(result, default=str)[:2000], file=sys.stderr)

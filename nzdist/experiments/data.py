"""The training text and its batches: the Python standard library's own sources, so every machine has the same
data without a download, cut into batches that depend only on (seed, step, rank) -- the same for every backend
and every run, and independent of what ran before (a resumed run sees the batches it would have seen)."""

from __future__ import annotations

import glob
import os
import sysconfig

import torch


def stdlib_bytes(max_bytes: int = 2 << 20) -> torch.Tensor:
    """The standard library's top-level ``*.py`` files, sorted by name and concatenated, as uint8 tokens."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    chunks, n = [], 0
    for f in files:
        with open(f, "rb") as fh:
            b = fh.read()
        chunks.append(b)
        n += len(b)
        if n >= max_bytes:
            break
    data = b"".join(chunks)[:max_bytes]
    if len(data) < 4096:
        raise RuntimeError(f"found only {len(data)} bytes of Python sources under {sysconfig.get_paths()['stdlib']}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def batch_for_step(tokens: torch.Tensor, step: int, batch: int, seq: int, rank: int, world: int, seed: int):
    """Rank ``rank``'s slice of global step ``step``: the same for every backend, independent of history."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, tokens.numel() - seq - 1, (world * batch,), generator=g)[
        rank * batch : (rank + 1) * batch
    ]
    x = torch.stack([tokens[s : s + seq] for s in starts.tolist()])
    y = torch.stack([tokens[s + 1 : s + seq + 1] for s in starts.tolist()])
    return x, y

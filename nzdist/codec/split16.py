"""Host kernels of the fp32 = bf16 + 16-bit remainder split (``nzdist/fsdp/remainder.py`` defines the rule and
keeps torch's elementwise ops for device tensors): one multithreaded C++ pass each way instead of about ten torch
passes and their temporaries, for shards that live in host memory (CPU training, ``CPUOffloadPolicy``)."""

from __future__ import annotations

import torch

from .. import _C


def split_host(x: torch.Tensor, hi: torch.Tensor, room: int, *, threads: int = 0):
    """(lo, index, upper, count) for contiguous host fp32 ``x`` and its bf16 cast ``hi``: the low halves, the first
    ``room`` exception positions (unused: ``x.numel()``) and their true high halves, and how many there are."""
    n = x.numel()
    lo = torch.empty(n, dtype=torch.int16)
    index = torch.empty(room, dtype=torch.int64)
    upper = torch.empty(room, dtype=torch.int16)
    count = _C.remainder_split(
        x.data_ptr(), hi.data_ptr(), n, lo.data_ptr(), index.data_ptr(), upper.data_ptr(), room, threads
    )
    return lo, index, upper, torch.tensor(count, dtype=torch.int64)


def join_host(
    hi: torch.Tensor, lo: torch.Tensor, index: torch.Tensor, upper: torch.Tensor, out: torch.Tensor, *, threads: int = 0
) -> torch.Tensor:
    """Write the fp32 values into contiguous host ``out``; returns it."""
    n = hi.numel()
    if lo.numel() != n or out.numel() != n or index.numel() != upper.numel():
        raise ValueError(f"remainder of {lo.numel()} elements for a shard of {n} (out: {out.numel()})")
    _C.remainder_join(
        hi.data_ptr(), lo.data_ptr(), index.data_ptr(), upper.data_ptr(), index.numel(), n, out.data_ptr(), threads
    )
    return out

"""Tensors that exercise every path of the format: real-weight-like values, every bit pattern of the 16-bit
dtypes, IEEE specials, sizes around lane/chunk boundaries, and codec settings (lossless, lossy, normalised)."""

from __future__ import annotations

import torch

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
INT_VIEW = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}
# Sizes: empty, one element, partial lanes, exact lanes, chunk boundaries of chunk_elems=1024.
SIZES = (0, 1, 31, 33, 1023, 1024, 1025, 3 * 1024 + 17)


def bits(t: torch.Tensor) -> torch.Tensor:
    """Bit patterns, so NaN payloads and -0.0 compare exactly."""
    return t.contiguous().view(INT_VIEW[t.dtype])


def weights(n: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.02).to(dtype)


def all_patterns(dtype: torch.dtype) -> torch.Tensor:
    """Every 16-bit pattern (NaNs, infinities, subnormals, both zeros), shuffled; fp32: specials + random bits."""
    g = torch.Generator().manual_seed(1)
    if dtype in (torch.bfloat16, torch.float16):
        p = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
        return p[torch.randperm(p.numel(), generator=g)].view(dtype)
    special = torch.tensor(
        [
            0,
            0x80000000,
            0x7F800000,
            0xFF800000,
            0x7FC00000,
            0x7F800001,
            0xFFFFFFFF,
            1,
            0x807FFFFF,
            0x00800000,
            0x7F7FFFFF,
            0x3F800000,
        ],
        dtype=torch.int64,
    )
    rand = torch.randint(0, 1 << 32, (20000,), generator=g, dtype=torch.int64)
    return torch.cat([special, rand]).to(torch.int32).view(torch.float32)


def fp16_origin_bf16(n: int) -> torch.Tensor:
    """bf16 values with zero low mantissa bits, the case where a non-exponent field compresses."""
    w = weights(n, torch.float32, seed=3)
    return (w.view(torch.int32) & ~0x000F0000).view(torch.float32).to(torch.bfloat16)


def lossy_settings(dtype: torch.dtype) -> list[tuple[int, int]]:
    """(keep_bits, block_size) pairs, normalised and not."""
    full = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23}[dtype]
    return [(0, 0), (1, 512), (3, 512), (3, 1000), (full - 1, 0), (full, 64)]

"""Fresh host tensors that the CPU codec fills start to end: a decoded tensor, a payload.

A large new buffer is faulted in 4 KiB at a time as it is first written. On the machines measured, those faults
cost more than decoding into it (64 M bf16 elements: 0.43-0.53 GB/s into a fresh tensor against 0.71-1.11 GB/s
with huge pages, BENCHMARKS.md 2026-12-02), so the codec asks for transparent huge pages on buffers big enough to hold
some. The advice only changes how the pages are backed, never the values; where the kernel refuses (THP off,
another OS) the buffer is an ordinary one.
"""

from __future__ import annotations

import torch

from .. import _C

# Below this a buffer holds at most one whole huge page: not worth a system call.
HUGE_MIN_BYTES = 4 << 20


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype)`` on the CPU, huge-page backed when large."""
    out = torch.empty(shape, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if nbytes >= HUGE_MIN_BYTES:
        _C.advise_huge_pages(out.data_ptr(), nbytes)
    return out

"""decode_into: decode payloads, or all-gather slots, where they lie, into given outputs, without reading anything
back. The one entry point of the training data path, the same glue on CPU and GPU.

The host describes every job from what it already knows (addresses, element counts, dtypes, the chunk size its
codec config encodes with) in the decoder's job table (csrc/cuda/records.h). The decoder itself parses and checks
slot headers (csrc/validate.h: check_slot) and payload headers, and ORs what is wrong with a job into that job's
int32 error word; nothing raises and nothing is read back. The CPU codec (``_C.decode_jobs``) reads the very same
table with host addresses, so CI runs the GPU path's glue. Whoever owns the error words reads them at a step
boundary (nzdist.fsdp: ``check``) with one host synchronisation for all parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import _C
from . import cuda as _gpu
from .api import _is_plain
from .config import default_chunk_elems
from .dtypes import MAX_FIELDS, dtype_code
from .stats import count

_SLOT_FLAG = _C.DECODE_JOB_FLAGS["slot"]


class JobTable:
    """The decoder's job table for one call, built from host facts only, and what must outlive the launch."""

    def __init__(self, table: torch.Tensor, n_jobs: int, total_items: int, max_fields: int, staged: list, keep: list):
        self.table, self.n_jobs, self.total_items, self.max_fields = table, n_jobs, total_items, max_fields
        self.staged = staged  # (out, target): non-contiguous or subclass outputs decoded into a temporary
        self.keep = keep  # sources and targets the table points into


def build_jobs(
    sources: Sequence[torch.Tensor],
    outs: Sequence[torch.Tensor],
    errors: torch.Tensor,
    *,
    slots: bool,
    grains: Sequence[int | None] | None = None,
    error_index: Sequence[int] | None = None,
) -> JobTable:
    """The job table ``decode_into`` hands to the decoder (the same for the CPU codec, the GPU kernels and the
    host simulation of the kernels in tests/cuda). Arguments as for decode_into."""
    n = len(sources)
    if len(outs) != n:
        raise ValueError(f"{n} sources but {len(outs)} outputs")
    if errors.dtype != torch.int32 or not errors.is_contiguous():
        raise TypeError("errors must be a contiguous int32 tensor")
    index = list(range(n)) if error_index is None else list(error_index)
    if len(index) != n or any(not 0 <= i < errors.numel() for i in index):
        raise ValueError("error_index must name one error word per job")
    device = errors.device
    on_gpu = device.type == "cuda"
    rows, staged, keep, first = [], [], [], 0
    for i, (src, out) in enumerate(zip(sources, outs)):
        if src.dtype != torch.uint8 or src.dim() != 1 or src.device != device or out.device != device:
            raise ValueError("sources must be 1-D uint8 tensors on the error words' device, like the outputs")
        if on_gpu and (src.data_ptr() % 16 or not src.is_contiguous()):  # the kernels use aligned loads
            src = src.contiguous().clone()
        elif not src.is_contiguous():
            src = src.contiguous()
        keep.append(src)
        target = out
        if not (out.is_contiguous() and _is_plain(out)):
            target = torch.empty(out.shape, dtype=out.dtype, device=device)
            staged.append((out, target))
        keep.append(target)
        grain = (grains[i] if grains is not None else None) or default_chunk_elems(out.dtype)
        items = 1 if target.numel() == 0 else -(-target.numel() // grain)
        rows.append(
            {
                "src": src.data_ptr(),
                "src_len": src.numel(),
                "dst": target.data_ptr(),
                "numel": target.numel(),
                "first_item": first,
                "grain": grain,
                "dtype": dtype_code(target.dtype),
                "err": errors.data_ptr() + 4 * index[i],
                "flags": _SLOT_FLAG if slots else 0,
            }
        )
        first += items
    max_fields = max((MAX_FIELDS[o.dtype] for o in outs), default=2)
    return JobTable(_gpu.pack_decode_jobs(rows), n, first, max_fields, staged, keep)


def decode_into(
    sources: Sequence[torch.Tensor],
    outs: Sequence[torch.Tensor],
    errors: torch.Tensor,
    *,
    verify: bool = False,
    threads: int = 0,
    **layout,
) -> None:
    """Decode ``sources[i]`` (1-D uint8: a payload, or with ``slots=True`` an all-gather slot holding one) into
    ``outs[i]`` (its shape and dtype say what the source must hold; a mismatch is an error, not a guess).

    ``errors``: int32 words on the sources' device; job i ORs its error bits into ``errors[error_index[i]]``
    (default i). ``layout``: ``slots`` (required), ``grains`` (elements per work item: the chunk size the payloads
    were encoded with; None the dtype's default; a wrong value costs speed only) and ``error_index``, as for
    :func:`build_jobs`. ``verify``: also check the CRCs on the GPU (the CPU always does). Queued on the current
    CUDA stream when everything is on the GPU; no host synchronisation either way.
    """
    jobs = build_jobs(sources, outs, errors, **layout)
    if not jobs.n_jobs:
        return
    count(decode=1)
    if errors.device.type == "cuda":
        _gpu.launch_jobs(jobs.table, jobs.n_jobs, jobs.total_items, jobs.max_fields, errors.device, verify=verify)
    else:
        _C.decode_jobs(jobs.table.data_ptr(), jobs.n_jobs, threads)
    for out, target in jobs.staged:
        out.copy_(target)

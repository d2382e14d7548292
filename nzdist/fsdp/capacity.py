"""Agreeing one all-gather capacity per parameter across ranks (the only collective nzdist.fsdp issues itself).

FSDP2 allocates its all-gather buffers once from the first call's input sizes and silently mis-splits if a rank
later sends a different size. So the capacity is agreed once, at a parameter's first all-gather, by one
all-reduce(MAX), and never changes:

    capacity = header + min(ceil(max_payload * (1 + headroom)) + slack, raw bytes of the padded shard)
    (trainable parameters; frozen ones get exactly max_payload, as they never change)

- ``max_payload``: the largest compressed payload of this parameter over all ranks at that moment;
- ``headroom``: room for the payload to grow as training changes the weights (default 2%: fine-tuning moves
  payloads by well under 1%; training from scratch grows them by ~6%, so pass ~0.1 there);
- the cap at the largest payload the codec can write (a raw-mode payload: header + raw elements): a tensor
  that does not compress (tiny biases, noise) is stored raw by the codec and always fits, so it can never
  overflow, and every slot decodes in the same single call.
- a floor for near-constant trainable tensors (zero-initialised biases, LoRA B, norm weights of ones): they
  compress to almost nothing at first and grow once trained, so their capacity starts at what trained weights
  of the dtype need.
A shard whose payload later outgrows a capacity below its raw size is marked *overflow* in its slot. Every rank
sees the mark after the all-gather, so all of them take the same branch (never a hang): by default the owner
broadcasts that shard raw right after (one extra collective for that parameter while it stays over capacity, with
a warning), or with ``on_overflow="raise"`` all ranks raise :class:`CapacityError`.

The same all-reduce carries each rank's padded shard numel and dtype (as +x and -x, so one MAX gives min and
max), so ranks that disagree on a shape raise :class:`ShardMismatchError` together before any mis-split.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from nzdist.accounting import record_all_gather
from nzdist.codec import max_compressed_bytes, read_back
from nzdist.codec.dtypes import DTYPE_CODES

from .slot import SLOT_HEADER_BYTES, ShardMismatchError

DEFAULT_HEADROOM = 0.02
_SLACK = 64  # bytes: per-chunk headers of the codec may grow by a few bytes with content
# A trainable tensor that starts near-constant (zero biases, LoRA B, norm weights of ones) compresses to almost
# nothing and grows once trained; below half of raw size its capacity is raised to what trained weights of the
# dtype need (bf16 ~10.6 of 16 bits, fp32 ~27 of 32; ANCHORS section 1) plus headroom.
_TRAINED_FRACTION = {torch.bfloat16: 0.72, torch.float16: 0.88, torch.float32: 0.88}


def agree_capacity(
    *,
    payload_bytes: int,
    padded_numel: int,
    dtype: torch.dtype,
    headroom: float,
    trainable: bool,
    ndim: int,
    codec,
    group,
    device: torch.device,
    name: str,
) -> int:
    """Slot capacity in bytes, identical on every rank of ``group``."""
    code = DTYPE_CODES.get(dtype, 0)
    vec = torch.tensor([payload_bytes, padded_numel, -padded_numel, code, -code], dtype=torch.int64, device=device)
    dist.all_reduce(vec, op=dist.ReduceOp.MAX, group=group)
    max_payload, numel_max, numel_min, code_max, code_min = (int(v) for v in read_back(vec))
    numel_min, code_min = -numel_min, -code_min
    if numel_max != numel_min or code_max != code_min:
        raise ShardMismatchError(
            f"ranks disagree on parameter {name or '?'}: padded shard numel ranges {numel_min}..{numel_max}, dtype "
            f"codes {code_min}..{code_max} (this rank: numel {padded_numel}, {dtype}); every rank must build the "
            "same model before sharding"
        )
    return capacity_for(
        max_payload,
        padded_numel=padded_numel,
        dtype=dtype,
        headroom=headroom,
        trainable=trainable,
        ndim=ndim,
        codec=codec,
    )


def capacity_for(
    max_payload: int,
    *,
    padded_numel: int,
    dtype: torch.dtype,
    headroom: float,
    trainable: bool,
    ndim: int = 1,
    codec=None,
) -> int:
    """The capacity policy itself (no communication): slot bytes for the largest payload seen on any rank."""
    raw = padded_numel * dtype.itemsize
    worst = max_compressed_bytes(padded_numel, dtype, codec, ndim=ndim)  # no payload of this codec exceeds it
    if not trainable:  # frozen: the payload never changes, no room to grow needed
        data = min(max_payload, worst)
    else:
        data = math.ceil(max_payload * (1.0 + headroom)) + _SLACK
        if max_payload < 0.5 * raw:
            data = max(data, math.ceil(_TRAINED_FRACTION.get(dtype, 1.0) * raw))
        data = min(data, worst)
    return SLOT_HEADER_BYTES + -(-data // 16) * 16  # 16-byte aligned slots keep every rank's payload aligned


def spill_raw(local_dense, target: torch.Tensor, owner: int, group) -> None:
    """Broadcast rank ``owner``'s shard raw into ``target`` on every rank of ``group`` (the overflow fallback).
    ``local_dense`` is called on the owner only (it decodes that rank's shard)."""
    mine = dist.get_rank(group) == owner
    buf = local_dense().to(target.dtype).contiguous() if mine else torch.empty_like(target)
    dist.broadcast(buf, src=dist.get_global_rank(group, owner), group=group)
    if mine:  # honest wire accounting: the spilled bytes were sent on top of the slot (no dense counterpart)
        record_all_gather(buf.numel() * buf.element_size(), 0)
    target.copy_(buf)

"""compress / decompress: the codec's public entry points."""

from __future__ import annotations

import torch

from . import _provisional as _backend
from .config import MANTISSA_BITS, Codec, Lossless
from .tensor import CompressedTensor


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype not in MANTISSA_BITS:
        raise TypeError(f"nzdist compresses bfloat16, float16 and float32 tensors, not {dtype}")


def compress(tensor: torch.Tensor, codec: Codec | None = None) -> CompressedTensor:
    """Compress a float tensor: ``ct = nzdist.compress(w, codec=nzdist.Lossless())``."""
    codec = codec or Lossless()
    _check_dtype(tensor.dtype)
    data = _backend.encode(tensor.detach().cpu(), codec)
    return CompressedTensor(data, tensor.shape, tensor.dtype)


def decompress(ct: CompressedTensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode ``ct``; into ``out`` (same shape and dtype) when given, else into a new tensor."""
    if out is None:
        out = torch.empty(ct.shape, dtype=ct.dtype)
    elif out.shape != ct.shape or out.dtype != ct.dtype:
        raise ValueError(f"out has shape {tuple(out.shape)} and dtype {out.dtype}; the payload holds "
                         f"{tuple(ct.shape)} {ct.dtype}")
    target = out if out.is_contiguous() and out.device.type == "cpu" else torch.empty_like(out, device="cpu").contiguous()
    _backend.decode(ct.data.cpu(), target)
    if target is not out:
        out.copy_(target)
    return out

"""One DCP item <-> the bytes of its record. The encodings are listed in format.py."""

from __future__ import annotations

import torch

import nzdist.codec as nzcodec

from . import delta, lossy

FLOATS = (torch.bfloat16, torch.float16, torch.float32)
BASED = frozenset({"qd", "dx", "same"})  # encodings whose decode needs the base checkpoint's item
_SMALL = 256  # bytes: below this a codec header costs more than it saves; stored raw
_DELTA_KEEP = 0.6  # a delta above this fraction of the dense size is compared with a full encode


def _u8(buf) -> torch.Tensor:
    if isinstance(buf, torch.Tensor):
        return buf
    return torch.frombuffer(bytearray(buf), dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)


def _raw(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t.view(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)


def _full(t: torch.Tensor, codec) -> tuple[str, torch.Tensor]:
    if isinstance(codec, lossy.Quantized):
        raise AssertionError("handled by the caller")
    return "nz", nzcodec.compress(t, codec=codec).data


def encode(t: torch.Tensor, fqn: str, codec, base: torch.Tensor | None) -> tuple[str, torch.Tensor, str]:
    """Returns (encoding, payload as 1-D uint8 tensor, kind). ``base``: the same item decoded from the base
    checkpoint (same shape and dtype), or None for a full save."""
    t = t.detach().contiguous()
    if t.dtype not in FLOATS or t.numel() * t.element_size() < _SMALL:
        if base is not None and _bit_equal(t, base):
            return "same", torch.empty(0, dtype=torch.uint8), "other"
        return "raw", _raw(t), "other"
    kind = lossy.kind_of(fqn)
    if isinstance(codec, lossy.Quantized) and kind == "other":
        codec = nzcodec.Lossless()
    if isinstance(codec, lossy.Quantized):
        if base is None:
            return "q", _u8(lossy.encode(t, kind, codec)), kind
        return "qd", _u8(lossy.encode(t, kind, codec, ref=base)), kind
    if base is None:
        enc, data = _full(t, codec)
        return enc, data, kind
    if isinstance(codec, nzcodec.Lossy):  # delta of what a full lossy save would have restored
        t = nzcodec.decompress(nzcodec.compress(t, codec=codec))
    if _bit_equal(t, base):
        return "same", torch.empty(0, dtype=torch.uint8), kind
    dx = _u8(delta.encode(t, base))
    if dx.numel() > _DELTA_KEEP * t.numel() * t.element_size():
        enc, data = _full(t, codec)
        if data.numel() < dx.numel():
            return enc, data, kind
    return "dx", dx, kind


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_raw(a), _raw(b))


def decode(
    encoding: str,
    data: torch.Tensor,
    dtype: torch.dtype,
    shape: torch.Size,
    base: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Inverse of :func:`encode`. ``data`` is the record as a 1-D uint8 tensor; writes into ``out`` when given."""
    if encoding == "raw":
        esize = torch.empty(0, dtype=dtype).element_size()
        if data.numel() != shape.numel() * esize:
            raise ValueError(
                f"raw record holds {data.numel()} bytes, {tuple(shape)} {dtype} needs {shape.numel() * esize}"
            )
        t = data.view(dtype).view(shape) if shape.numel() else torch.empty(shape, dtype=dtype)
    elif encoding == "nz":
        ct = nzcodec.CompressedTensor.from_bytes(data)
        if ct.dtype != dtype or ct.numel != shape.numel():
            raise ValueError(f"payload holds {tuple(ct.shape)} {ct.dtype}, expected {tuple(shape)} {dtype}")
        if out is not None and out.is_contiguous() and out.shape == ct.shape:
            return nzcodec.decompress(ct, out=out, verify=True)  # checkpoint loads check every CRC
        t = nzcodec.decompress(ct, verify=True).view(shape)
    elif encoding in ("q", "qd"):
        t = lossy.decode(data.numpy(), shape, dtype, ref=base if encoding == "qd" else None)
    elif encoding == "dx":
        t = delta.decode(data.numpy(), base.view(shape))
    elif encoding == "same":
        if base.dtype != dtype or base.numel() != shape.numel():
            raise ValueError(f"base item is {tuple(base.shape)} {base.dtype}, expected {tuple(shape)} {dtype}")
        t = base.view(shape)
    else:
        raise ValueError(f"unknown record encoding {encoding!r}")
    if out is not None:
        out.copy_(t.view(out.shape))
        return out
    return t

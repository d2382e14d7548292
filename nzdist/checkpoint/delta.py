"""Lossless delta of a float tensor against the same tensor in an earlier checkpoint.

Scheme (chosen by measurement, see README.md "Delta"): reinterpret both tensors' bit patterns as integers,
take ``new - base`` modulo 2^w (w = 16 for bf16/fp16, 32 for fp32), zigzag-map it so small changes of either
sign become small unsigned numbers, split those into byte planes (most significant first) and zstd each plane.

Why not XOR: a step that carries across a mantissa boundary (0x3f7f -> 0x3f80) flips many bits under XOR but is
a difference of 1; why byte planes: a small difference leaves the high planes almost all zero, which zstd
squeezes to nothing, while the low planes are near-random and cost what they must. The nzdist float codec is the
wrong tool here: it models sign+exponent of *floats*, and a difference of bit patterns is not a float.

Payload: u8 method | u8 width | u64 numel | per plane: u64 length, zstd frame.
"""

from __future__ import annotations

import struct

import torch
import zstandard

SUB = 1  # integer difference of bit patterns, zigzag
XOR = 2  # bitwise XOR of bit patterns (kept for the measurement in the bench)

_HEAD = struct.Struct("<BBQ")
_LEN = struct.Struct("<Q")
_INT = {2: torch.int16, 4: torch.int32}
_WIDE = {2: torch.int32, 4: torch.int64}
ZSTD_LEVEL = 3


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(_INT[t.element_size()])


def _zigzag(d: torch.Tensor, width: int) -> torch.Tensor:
    # d is a wrapped signed difference in the wider dtype; result fits `width` bytes unsigned, stored signed.
    bits = 8 * width
    d = torch.remainder(d + (1 << (bits - 1)), 1 << bits) - (1 << (bits - 1))  # wrap into the signed range
    z = torch.where(d >= 0, d * 2, -d * 2 - 1)
    z = torch.where(z >= (1 << (bits - 1)), z - (1 << bits), z)  # store as the signed type of the same width
    return z.to(_INT[width])


def _unzigzag(z: torch.Tensor, width: int) -> torch.Tensor:
    bits = 8 * width
    z = z.to(_WIDE[width])
    z = torch.where(z < 0, z + (1 << bits), z)
    return torch.where(z % 2 == 0, z // 2, -(z + 1) // 2)


def _planes(x: torch.Tensor, width: int) -> list[torch.Tensor]:
    b = x.view(torch.uint8).view(-1, width)  # little-endian: column 0 is the least significant byte
    return [b[:, i].contiguous() for i in reversed(range(width))]


def encode(new: torch.Tensor, base: torch.Tensor, method: int = SUB, level: int = ZSTD_LEVEL) -> bytes:
    """Delta payload that, with ``base``, reproduces ``new`` bit for bit."""
    if new.shape != base.shape or new.dtype != base.dtype:
        raise ValueError(f"delta needs the same shape and dtype, got {tuple(new.shape)} {new.dtype} vs "
                         f"{tuple(base.shape)} {base.dtype}")
    width = new.element_size()
    a, b = _bits(new), _bits(base)
    if method == SUB:
        d = _zigzag(a.to(_WIDE[width]) - b.to(_WIDE[width]), width)
    elif method == XOR:
        d = torch.bitwise_xor(a, b)
    else:
        raise ValueError(f"unknown delta method {method}")
    cctx = zstandard.ZstdCompressor(level=level)
    out = [_HEAD.pack(method, width, a.numel())]
    for plane in _planes(d, width):
        frame = cctx.compress(plane.numpy())
        out += [_LEN.pack(len(frame)), frame]
    return b"".join(out)


def decode(payload, base: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`encode`; raises ValueError on a malformed payload."""
    buf = memoryview(payload)
    if len(buf) < _HEAD.size:
        raise ValueError("delta payload truncated")
    method, width, numel = _HEAD.unpack_from(buf)
    if width != base.element_size() or numel != base.numel():
        raise ValueError(f"delta payload is for {numel} elements of {width} bytes, base has {base.numel()} of "
                         f"{base.element_size()}")
    planes = torch.empty(width, numel, dtype=torch.uint8)
    dctx = zstandard.ZstdDecompressor()
    pos = _HEAD.size
    for i in range(width):
        (n,) = _LEN.unpack_from(buf, pos)
        pos += _LEN.size
        raw = dctx.decompress(buf[pos:pos + n], max_output_size=numel)
        if len(raw) != numel:
            raise ValueError("delta plane has the wrong length")
        planes[width - 1 - i] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if numel else planes[0]
        pos += n
    d = planes.t().contiguous().view(_INT[width]).view(-1)
    b = _bits(base)
    if method == SUB:
        v = b.to(_WIDE[width]) + _unzigzag(d, width)
        bits = 8 * width
        v = torch.remainder(v + (1 << (bits - 1)), 1 << bits) - (1 << (bits - 1))
        v = v.to(_INT[width])
    elif method == XOR:
        v = torch.bitwise_xor(b, d)
    else:
        raise ValueError(f"unknown delta method {method}")
    result = v.view(base.dtype).view(base.shape)
    if out is None:
        return result
    out.copy_(result)
    return out

"""Lossless delta of a float tensor against the same tensor in an earlier checkpoint.

Scheme (chosen by measurement, see README.md "Delta"): reinterpret both tensors' bit patterns as integers,
take ``new - base`` modulo 2^w (w = 16 for bf16/fp16, 32 for fp32), zigzag-map it so small changes of either
sign become small unsigned numbers, split those into byte planes (most significant first) and zstd each plane.

Why not XOR: a step that carries across a mantissa boundary (0x3f7f -> 0x3f80) flips many bits under XOR but is
a difference of 1; why byte planes: a small difference leaves the high planes almost all zero, which zstd
squeezes to nothing, while the low planes are near-random and cost what they must. The nzdist float codec is the
wrong tool here: it models sign+exponent of *floats*, and a difference of bit patterns is not a float.

Per tensor the smaller of that and XOR_NZ is kept: XOR of the bit patterns, read as floats and coded by the nzdist
codec. For bf16 at small learning rates most XOR'd "exponents" are 0 and the few changed bits sit in the 7-bit
"mantissa", which that codec models well (measured: ~20% smaller than SUB there); for fp32 SUB always won, so
XOR_NZ is not tried.

Payload: u8 method | u8 width | u64 numel | SUB/XOR: per plane (most significant first) u64 length, zstd frame;
XOR_NZ: one nzdist payload.
"""

from __future__ import annotations

import struct

import numpy as np
import torch

SUB = 1  # integer difference of bit patterns, zigzag, byte planes, zstd
XOR = 2  # bitwise XOR of bit patterns, byte planes, zstd (kept for the measurement in the bench)
XOR_NZ = 3  # XOR of bit patterns, read as floats of the same dtype and coded by the nzdist codec
AUTO = 0  # SUB or XOR_NZ, whichever is smaller for this tensor

_HEAD = struct.Struct("<BBQ")
_LEN = struct.Struct("<Q")
_UINT = {2: np.uint16, 4: np.uint32}
_SINT = {2: np.int16, 4: np.int32}
ZSTD_LEVEL = 1  # measured: levels 1 and 3 give the same size on these planes (±0.5%), 1 is faster


def _bits(t: torch.Tensor) -> np.ndarray:
    """The tensor's bit patterns as unsigned ints (numpy: wrapping arithmetic, no widening)."""
    return t.detach().contiguous().view(-1).view(torch.uint8).numpy().view(_UINT[t.element_size()])


def _zigzag(d: np.ndarray, width: int) -> np.ndarray:
    s = d.view(_SINT[width])
    return ((s << 1) ^ (s >> (8 * width - 1))).view(_UINT[width])


def _unzigzag(z: np.ndarray, width: int) -> np.ndarray:
    one = _UINT[width](1)
    return (z >> one) ^ (np.zeros(1, _UINT[width]) - (z & one))


def encode(new: torch.Tensor, base: torch.Tensor, method: int = AUTO, level: int = ZSTD_LEVEL) -> bytes:
    """Delta payload that, with ``base``, reproduces ``new`` bit for bit."""
    if method == AUTO:
        a = encode(new, base, SUB, level)
        if new.dtype == torch.float32:  # measured: XOR_NZ never wins on fp32 (see README), skip its cost
            return a
        b = encode(new, base, XOR_NZ, level)
        return a if len(a) <= len(b) else b
    if new.shape != base.shape or new.dtype != base.dtype:
        raise ValueError(
            f"delta needs the same shape and dtype, got {tuple(new.shape)} {new.dtype} vs "
            f"{tuple(base.shape)} {base.dtype}"
        )
    width = new.element_size()
    if width not in _UINT:
        raise TypeError(f"delta encodes 2- and 4-byte floats, not {new.dtype}")
    a, b = _bits(new), _bits(base)
    if method == XOR_NZ:
        from nzdist.codec import compress

        x = torch.from_numpy(a ^ b).view(new.dtype)
        return _HEAD.pack(method, width, a.size) + compress(x).to_bytes()
    if method == SUB:
        d = _zigzag(a - b, width)  # unsigned subtraction wraps modulo 2^w
    elif method == XOR:
        d = a ^ b
    else:
        raise ValueError(f"unknown delta method {method}")
    planes = d.view(np.uint8).reshape(-1, width)  # little-endian: column 0 is the least significant byte
    import zstandard  # imported here: plain lossless checkpoints work without it

    cctx = zstandard.ZstdCompressor(level=level)
    out = [_HEAD.pack(method, width, a.size)]
    for i in reversed(range(width)):
        frame = cctx.compress(np.ascontiguousarray(planes[:, i]))
        out += [_LEN.pack(len(frame)), frame]
    return b"".join(out)


def decode(payload, base: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`encode`; raises ValueError on a malformed payload."""
    buf = memoryview(payload)
    if len(buf) < _HEAD.size:
        raise ValueError("delta payload truncated")
    method, width, numel = _HEAD.unpack_from(buf)
    if width != base.element_size() or numel != base.numel():
        raise ValueError(
            f"delta payload is for {numel} elements of {width} bytes, base has {base.numel()} of {base.element_size()}"
        )
    if method == XOR_NZ:
        from nzdist.codec import CompressedTensor, decompress

        ct = CompressedTensor.from_bytes(torch.frombuffer(bytearray(buf[_HEAD.size :]), dtype=torch.uint8))
        if ct.numel != numel or ct.dtype != base.dtype:
            raise ValueError("delta payload holds a tensor of another size or dtype")
        d = decompress(ct, verify=True).view(-1).view(torch.uint8).numpy().view(_UINT[width])
        result = torch.from_numpy(_bits(base) ^ d).view(base.dtype).view(base.shape)
        return result if out is None else out.copy_(result)
    planes = np.empty((numel, width), dtype=np.uint8)
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    pos = _HEAD.size
    for i in reversed(range(width)):
        if pos + _LEN.size > len(buf):
            raise ValueError("delta payload truncated")
        (n,) = _LEN.unpack_from(buf, pos)
        pos += _LEN.size
        raw = dctx.decompress(buf[pos : pos + n], max_output_size=numel) if numel else b""
        if len(raw) != numel:
            raise ValueError("delta plane has the wrong length")
        planes[:, i] = np.frombuffer(raw, dtype=np.uint8)
        pos += n
    d = planes.view(_UINT[width]).reshape(-1)
    b = _bits(base)
    if method == SUB:
        v = b + _unzigzag(d, width)
    elif method == XOR:
        v = b ^ d
    else:
        raise ValueError(f"unknown delta method {method}")
    result = torch.from_numpy(v).view(base.dtype).view(base.shape)
    if out is None:
        return result
    out.copy_(result)
    return out

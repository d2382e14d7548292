"""Opt-in lossy checkpoints (Inshrinkerator-style): quantise each kind of state as coarsely as training tolerates,
entropy-code the codes, and quantise *against the previous checkpoint* (quantisation-aware delta).

Scheme (justified by measurement in README.md "Lossy"):

- weights and Adam's first moment: block-wise uniform quantisation. Each block of ``block_size`` elements gets
  a step; codes are ``round((x - ref) / step)``, where ``ref`` is zero for a full save and the reconstructed
  value of the base checkpoint for a delta save, so the error is at most step/2 at every save and never
  accumulates along a chain. The step is ``absmax / (2^(bits-1) - 1)`` of the block's values — except for
  weights in a delta save, where it is taken from the block's change ``x - ref`` (``weight_delta_step``): a
  value-sized step would undo fine-tuning, which moves weights by far less (README.md "Lossy"). First-moment
  codes between nearby saves are then almost all 0; weight codes cost about ``weight_bits`` bits again.
- Adam's second moment (non-negative; Adam divides by its square root, so its *relative* error is what
  matters): log-domain quantisation, ``code = round(steps_per_octave * log2 v)``; values below 2^-126 become 0.
  Against a base, the stored code is the difference of codes.
- Codes are offset to be non-negative, split into byte planes and zstd-compressed (zstd's Huffman stage brings
  them close to their order-0 entropy); per-block steps are fp32, zstd-compressed.

Payload: u8 scheme | u32 block_size | u64 numel | i64 code offset | u8 code width | u64 len, zstd(steps) |
per code plane: u64 len, zstd(plane).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import torch

LINEAR = 1
LOG = 2
_HEAD = struct.Struct("<BIQqB")
_LEN = struct.Struct("<Q")
_ZERO_EXP = -126.0  # log-domain values at or below 2^-126 reconstruct as 0
_ZSTD_LEVEL = 3


@dataclass(frozen=True)
class Quantized:
    """Lossy checkpoint codec: ``nzdist.checkpoint.save(sd, path, codec=nzdist.checkpoint.Quantized())``.

    ``weight_bits``/``exp_avg_bits``: bits of the block-wise uniform quantiser (step = block absmax /
    (2^(bits-1)-1)); ``exp_avg_sq_steps_per_octave``: resolution of the log-domain quantiser for Adam's second
    moment (1 → v within a factor 2^(1/2), sqrt(v) within 2^(1/4) ≈ ±19%). Tensors are classified by name:
    ``*exp_avg_sq`` → second moment, ``*exp_avg`` → first moment, ``*step`` → kept lossless, other floats →
    weights. ``weight_delta_step``: "change" (default; a delta save's weight error is bounded by the change since
    the base) or "value" (smaller deltas, but the error of a full save persists — loses fine-tuning progress).
    """

    weight_bits: int = 6
    exp_avg_bits: int = 3
    exp_avg_sq_steps_per_octave: int = 1
    block_size: int = 256
    weight_delta_step: str = "change"

    def __post_init__(self) -> None:
        for name in ("weight_bits", "exp_avg_bits"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 2 <= v <= 16:
                raise ValueError(f"{name} must be an int in 2..16, got {v!r}")
        if not isinstance(self.exp_avg_sq_steps_per_octave, int) or not 1 <= self.exp_avg_sq_steps_per_octave <= 64:
            raise ValueError(
                f"exp_avg_sq_steps_per_octave must be an int in 1..64, got {self.exp_avg_sq_steps_per_octave!r}"
            )
        if self.weight_delta_step not in ("change", "value"):
            raise ValueError(f'weight_delta_step must be "change" or "value", got {self.weight_delta_step!r}')
        if not isinstance(self.block_size, int) or not 16 <= self.block_size <= (1 << 20):
            raise ValueError(f"block_size must be an int in 16..1048576, got {self.block_size!r}")


def kind_of(fqn: str) -> str:
    """What a state-dict entry is, from its name (torch Adam/AdamW naming)."""
    leaf = fqn.rsplit(".", 1)[-1]
    if leaf == "exp_avg_sq":
        return "exp_avg_sq"
    if leaf == "exp_avg":
        return "exp_avg"
    if leaf == "step":  # optimizer step counters: never quantised
        return "other"
    return "weight"


def _pack_codes(codes: torch.Tensor, cctx) -> tuple[int, int, list[bytes]]:
    if codes.numel() == 0:
        return 0, 1, [cctx.compress(b"")]
    lo = int(codes.min())
    u = codes - lo
    span = int(u.max())
    width = 1 if span < (1 << 8) else 2 if span < (1 << 16) else 4
    u = u.to({1: torch.uint8, 2: torch.int16, 4: torch.int32}[width])
    b = u.view(torch.uint8).view(-1, width)
    return lo, width, [cctx.compress(b[:, i].contiguous().numpy()) for i in range(width)]


def _block_view(x: torch.Tensor, block: int) -> torch.Tensor:
    n = x.numel()
    pad = (-n) % block
    if pad:
        x = torch.cat([x, x.new_zeros(pad)])
    return x.view(-1, block)


def encode(x: torch.Tensor, kind: str, cfg: Quantized, ref: torch.Tensor | None = None) -> bytes:
    """Quantise ``x`` (any float dtype) for storage; ``ref`` is the base checkpoint's reconstruction of the same
    item (delta save) or None. Returns the payload :func:`decode` reads."""
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    import zstandard  # imported here: plain lossless checkpoints work without it

    cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    ref_flat = None if ref is None else ref.reshape(-1).float()
    if kind == "exp_avg_sq" and (n == 0 or bool((flat >= 0).all())):
        scheme, k = LOG, cfg.exp_avg_sq_steps_per_octave
        codes = _log_codes(flat, k)
        if ref_flat is not None:
            codes = codes - _log_codes(ref_flat.clamp_min(0), k)
        steps = torch.tensor([float(k)])
    else:
        scheme = LINEAR
        bits = cfg.exp_avg_bits if kind == "exp_avg" else cfg.weight_bits
        levels = (1 << (bits - 1)) - 1
        blocks = _block_view(flat, cfg.block_size)
        target = blocks if ref_flat is None else blocks - _block_view(ref_flat, cfg.block_size)
        # A delta save of weights steps by the block's change since the base (plus the base's own error), not by
        # its values: fine-tuning moves weights far less than a value-sized step, which would undo it.
        by_change = ref_flat is not None and kind == "weight" and cfg.weight_delta_step == "change"
        steps = (target if by_change else blocks).abs().amax(dim=1) / levels
        safe = torch.where(steps > 0, steps, torch.ones_like(steps))
        if not bool(torch.isfinite(steps).all()):  # a NaN/inf anywhere in a block makes its step non-finite
            raise ValueError("lossy quantisation met a non-finite value; save this tensor losslessly")
        codes = torch.round(target / safe[:, None])
        codes = torch.where(steps[:, None] > 0, codes, torch.zeros_like(codes))
        codes = codes.to(torch.int64).view(-1)[:n]
    lo, width, planes = _pack_codes(codes.to(torch.int64), cctx)
    step_frame = cctx.compress(steps.contiguous().numpy().tobytes())
    out = [_HEAD.pack(scheme, cfg.block_size, n, lo, width), _LEN.pack(len(step_frame)), step_frame]
    for p in planes:
        out += [_LEN.pack(len(p)), p]
    return b"".join(out)


def _log_codes(v: torch.Tensor, k: int) -> torch.Tensor:
    zero = math.floor(k * _ZERO_EXP)
    lg = torch.log2(v.clamp_min(2.0**_ZERO_EXP))
    c = torch.round(lg * k).to(torch.int64)
    return torch.where(v <= 2.0**_ZERO_EXP, torch.full_like(c, zero), c)


def decode(payload, shape: torch.Size, dtype: torch.dtype, ref: torch.Tensor | None = None) -> torch.Tensor:
    buf = memoryview(payload)
    if len(buf) < _HEAD.size:
        raise ValueError("lossy payload truncated")
    scheme, block, n, lo, width = _HEAD.unpack_from(buf)
    if n != shape.numel():
        raise ValueError(f"lossy payload holds {n} elements, expected {shape.numel()}")
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    pos = _HEAD.size

    def frame(limit: int) -> bytes:
        nonlocal pos
        (m,) = _LEN.unpack_from(buf, pos)
        pos += _LEN.size
        data = dctx.decompress(buf[pos : pos + m], max_output_size=limit)
        pos += m
        return data

    nblocks = max(1, -(-n // block))
    steps = torch.frombuffer(bytearray(frame(4 * nblocks)), dtype=torch.float32)
    planes = torch.empty(n, width, dtype=torch.uint8)
    for i in range(width):
        raw = frame(n)
        if len(raw) != n:
            raise ValueError("lossy code plane has the wrong length")
        if n:
            planes[:, i] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    u = planes.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[width]).view(-1).to(torch.int64)
    if width == 2:
        u = u & 0xFFFF
    elif width == 4:
        u = u & 0xFFFFFFFF
    codes = u + lo
    ref_flat = None if ref is None else ref.reshape(-1).float()
    if scheme == LOG:
        k = int(steps[0])
        if ref_flat is not None:
            codes = codes + _log_codes(ref_flat.clamp_min(0), k)
        zero = math.floor(k * _ZERO_EXP)
        vals = torch.exp2(codes.double() / k).float()
        vals = torch.where(codes <= zero, torch.zeros_like(vals), vals)
    elif scheme == LINEAR:
        if steps.numel() != nblocks and n:
            raise ValueError("lossy payload has the wrong number of block steps")
        vals = (_block_view(codes.float(), block) * steps[:, None]).view(-1)[:n]
        if ref_flat is not None:
            vals = vals + ref_flat
    else:
        raise ValueError(f"unknown lossy scheme {scheme}")
    return vals.to(dtype).view(shape)

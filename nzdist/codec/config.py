"""Codec configurations: what to keep and how to cut a tensor into chunks.

Configs are frozen dataclasses validated at construction, so a bad value fails where it is written, not deep
inside the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _C
from .dtypes import MANTISSA_BITS, dtype_code

# Elements per independently decodable chunk for bf16 and fp32. 64 Ki elements keeps per-chunk overhead (lane
# states, tables) near 0.05 bit/element while a 1 GiB bf16 tensor still yields 8192 chunks, one per GPU warp.
# fp16 defaults to 128 Ki (its tables cost more per element): a config whose chunk_elems is None takes the
# dtype's default, csrc/format.h default_chunk_elems().
DEFAULT_CHUNK_ELEMS = 1 << 16


def default_chunk_elems(dtype: torch.dtype) -> int:
    """Elements per chunk when a codec config leaves ``chunk_elems`` unset (64 Ki; 128 Ki for fp16)."""
    return _C.default_chunk_elems(dtype_code(dtype))


def _check_chunk_elems(chunk_elems: int | None) -> None:
    if chunk_elems is None:
        return
    lo, hi, lanes = _C.MIN_CHUNK_ELEMS, _C.MAX_CHUNK_ELEMS, _C.LANES  # csrc/validate.h: chunk_elems_ok
    if not isinstance(chunk_elems, int) or chunk_elems < lo or chunk_elems > hi or chunk_elems % lanes:
        raise ValueError(f"chunk_elems must be a multiple of {lanes} between {lo} and {hi}, got {chunk_elems!r}")


@dataclass(frozen=True)
class Lossless:
    """Bit-exact compression: ``nzdist.compress(t, codec=nzdist.Lossless())``.

    ``chunk_elems``: elements per independently decodable chunk; None = the dtype's default
    (``default_chunk_elems``)."""

    chunk_elems: int | None = None

    def __post_init__(self) -> None:
        _check_chunk_elems(self.chunk_elems)

    def mantissa_bits_for(self, dtype: torch.dtype) -> int:
        return MANTISSA_BITS[dtype]

    def chunk_elems_for(self, dtype: torch.dtype) -> int:
        return default_chunk_elems(dtype) if self.chunk_elems is None else self.chunk_elems


@dataclass(frozen=True)
class Lossy:
    """NeuZip's lossy codec: keep ``mantissa_bits`` mantissa bits, rounded to nearest (ties to even) with carry
    into the exponent; with ``block_size`` > 0 each block of that many elements is first divided by a normaliser
    that makes its largest magnitude an exact power of two.

    ``nzdist.compress(t, codec=nzdist.Lossy(mantissa_bits=3, block_size=512))``
    """

    mantissa_bits: int = 3
    block_size: int = 512
    chunk_elems: int | None = None  # None: the dtype's default (default_chunk_elems)

    def __post_init__(self) -> None:
        if not isinstance(self.mantissa_bits, int) or not 0 <= self.mantissa_bits <= 23:
            raise ValueError(f"mantissa_bits must be an int in 0..23, got {self.mantissa_bits!r}")
        if not isinstance(self.block_size, int) or self.block_size < 0 or self.block_size > (1 << 24):
            raise ValueError(
                f"block_size must be an int in 0..16777216 (0 disables normalisation), got {self.block_size!r}"
            )
        _check_chunk_elems(self.chunk_elems)

    def mantissa_bits_for(self, dtype: torch.dtype) -> int:
        full = MANTISSA_BITS[dtype]
        if self.mantissa_bits > full:
            raise ValueError(f"Lossy(mantissa_bits={self.mantissa_bits}) exceeds the {full} mantissa bits of {dtype}")
        return self.mantissa_bits

    def chunk_elems_for(self, dtype: torch.dtype) -> int:
        return default_chunk_elems(dtype) if self.chunk_elems is None else self.chunk_elems


Codec = Lossless | Lossy

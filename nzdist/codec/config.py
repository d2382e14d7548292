"""Codec configurations: what to keep and how to cut a tensor into chunks.

Configs are frozen dataclasses validated at construction, so a bad value fails where it is written, not deep
inside the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Elements per independently decodable chunk. 64 Ki elements keeps per-chunk overhead (lane states, tables)
# near 0.05 bit/element while a 1 GiB bf16 tensor still yields 8192 chunks, one per GPU warp.
DEFAULT_CHUNK_ELEMS = 1 << 16

MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23}


def _check_chunk_elems(chunk_elems: int) -> None:
    if not isinstance(chunk_elems, int) or chunk_elems < 1024 or chunk_elems > (1 << 24) or chunk_elems % 32:
        raise ValueError(
            f"chunk_elems must be a multiple of 32 between 1024 and 16777216, got {chunk_elems!r}"
        )


@dataclass(frozen=True)
class Lossless:
    """Bit-exact compression: ``nzdist.compress(t, codec=nzdist.Lossless())``."""

    chunk_elems: int = DEFAULT_CHUNK_ELEMS

    def __post_init__(self) -> None:
        _check_chunk_elems(self.chunk_elems)

    def mantissa_bits_for(self, dtype: torch.dtype) -> int:
        return MANTISSA_BITS[dtype]


@dataclass(frozen=True)
class Lossy:
    """NeuZip's lossy codec: keep ``mantissa_bits`` mantissa bits, rounded to nearest (ties to even) with carry
    into the exponent; with ``block_size`` > 0 each block of that many elements is first divided by a normaliser
    that makes its largest magnitude an exact power of two.

    ``nzdist.compress(t, codec=nzdist.Lossy(mantissa_bits=3, block_size=512))``
    """

    mantissa_bits: int = 3
    block_size: int = 512
    chunk_elems: int = DEFAULT_CHUNK_ELEMS

    def __post_init__(self) -> None:
        if not isinstance(self.mantissa_bits, int) or not 0 <= self.mantissa_bits <= 23:
            raise ValueError(f"mantissa_bits must be an int in 0..23, got {self.mantissa_bits!r}")
        if not isinstance(self.block_size, int) or self.block_size < 0 or self.block_size > (1 << 24):
            raise ValueError(
                f"block_size must be an int in 0..16777216 (0 disables normalisation), got {self.block_size!r}")
        _check_chunk_elems(self.chunk_elems)

    def mantissa_bits_for(self, dtype: torch.dtype) -> int:
        full = MANTISSA_BITS[dtype]
        if self.mantissa_bits > full:
            raise ValueError(
                f"Lossy(mantissa_bits={self.mantissa_bits}) exceeds the {full} mantissa bits of {dtype}"
            )
        return self.mantissa_bits


Codec = Lossless | Lossy

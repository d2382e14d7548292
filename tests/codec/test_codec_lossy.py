"""NeuZip's lossy codec: k mantissa bits, round to nearest even with carry, optional block normalisation.

The error bound tested here is the one csrc/FORMAT.md documents (section "Lossy error bound").
"""

import math

import pytest
import torch

import nzdist
from tests.conftest import int_view

MANT = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23}
EMIN = {torch.bfloat16: -126, torch.float16: -14, torch.float32: -126}


def bound(x: torch.Tensor, dtype, k: int, normalised: bool) -> torch.Tensor:
    m = MANT[dtype]
    ax = x.double().abs()
    if not normalised:
        return 2.0 ** -(k + 1) * torch.clamp(ax, min=2.0 ** EMIN[dtype])
    rel = 2.0 ** -(k + 1) + 1.5 * 2.0**-m + 2.0**-22
    return rel * ax + 2.0 ** (EMIN[dtype] - k + 1) + 2.0 ** (EMIN[dtype] - m + 1)


def sample(dtype, n=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * torch.exp(torch.randn(n, generator=g) * 2) * 0.02  # wide dynamic range
    return x.to(dtype)


@pytest.mark.parametrize("dtype", list(MANT))
@pytest.mark.parametrize("block_size", [0, 512, 100])
def test_error_bound(dtype, block_size, encoder):
    x = sample(dtype)
    for k in sorted({0, 1, 3, MANT[dtype] // 2, MANT[dtype] - 1}):
        codec = nzdist.Lossy(mantissa_bits=k, block_size=block_size, chunk_elems=4096)
        y = nzdist.decompress(nzdist.compress(x, codec=codec))
        err = (y.double() - x.double()).abs()
        ok = err <= bound(x, dtype, k, block_size > 0)
        assert ok.all(), f"k={k}: {int((~ok).sum())} values exceed the bound, worst {x[~ok][:3]} -> {y[~ok][:3]}"


@pytest.mark.parametrize("dtype", list(MANT))
def test_unnormalised_keeps_exactly_k_bits_and_is_idempotent(dtype):
    x = sample(dtype, seed=1)
    for k in (0, 2, MANT[dtype] - 1):
        codec = nzdist.Lossy(mantissa_bits=k, block_size=0)
        y = nzdist.decompress(nzdist.compress(x, codec=codec))
        low = int_view(y).to(torch.int64) & ((1 << (MANT[dtype] - k)) - 1)
        assert (low == 0).all()  # only k mantissa bits survive
        again = nzdist.decompress(nzdist.compress(y, codec=codec))
        assert torch.equal(int_view(again), int_view(y))


def test_round_to_nearest_even_with_carry():
    # bf16 1.9375 = 1.1111b: with 3 bits it is exactly halfway between 1.875 and 2.0 -> ties to even: 2.0 (carry).
    x = torch.tensor([1.9375, 1.8125, 1.0625, -1.9375], dtype=torch.bfloat16)
    y = nzdist.decompress(nzdist.compress(x, codec=nzdist.Lossy(mantissa_bits=3, block_size=0)))
    assert y.tolist() == [2.0, 1.75, 1.0, -2.0]


def test_full_precision_without_blocks_is_lossless():
    x = sample(torch.bfloat16, seed=2)
    y = nzdist.decompress(nzdist.compress(x, codec=nzdist.Lossy(mantissa_bits=7, block_size=0)))
    assert torch.equal(int_view(y), int_view(x))


@pytest.mark.parametrize("dtype", list(MANT))
def test_specials(dtype):
    finfo = torch.finfo(dtype)
    x = torch.tensor([math.inf, -math.inf, finfo.max, -finfo.max, 0.0, -0.0, finfo.tiny, 1.0], dtype=dtype)
    for block_size in (0, 4):
        y = nzdist.decompress(nzdist.compress(x, codec=nzdist.Lossy(mantissa_bits=0, block_size=block_size)))
        assert torch.isinf(y[:2]).all() and (y[:2] == x[:2]).all()
        assert torch.isfinite(y[2:]).all()  # the largest finite values saturate instead of becoming inf
        assert int_view(y[5]).item() == int_view(x[5]).item()  # -0 keeps its sign
    nan = torch.tensor([math.nan, 1.0], dtype=dtype)
    y = nzdist.decompress(nzdist.compress(nan, codec=nzdist.Lossy(mantissa_bits=1, block_size=0)))
    assert torch.isnan(y[0]) and y[1] == 1.0
    with pytest.raises(ValueError, match="NaN"):
        nzdist.compress(nan, codec=nzdist.Lossy(mantissa_bits=0))


def test_fewer_bits_compress_smaller(minilm_state):
    w = minilm_state["encoder.layer.0.intermediate.dense.weight"].bfloat16()
    sizes = [nzdist.compress(w, codec=nzdist.Lossy(mantissa_bits=k, block_size=512)).nbytes for k in (7, 3, 1, 0)]
    assert sizes == sorted(sizes, reverse=True)
    assert 8 * sizes[-2] / w.numel() < 5  # 1 mantissa bit: sign + exponent ~3.6 bits + 1


def test_lossy_bound_is_checked_against_the_dtype():
    with pytest.raises(ValueError, match="exceeds the 7 mantissa bits"):
        nzdist.compress(torch.zeros(4, dtype=torch.bfloat16), codec=nzdist.Lossy(mantissa_bits=8))
    for bad in (
        dict(mantissa_bits=-1),
        dict(mantissa_bits=24),
        dict(block_size=-5),
        dict(chunk_elems=1000),
        dict(mantissa_bits=2.5),
    ):
        with pytest.raises(ValueError):
            nzdist.Lossy(**bad)

"""Lossless round trips: every bit pattern, any shape and layout, both decode loops, any thread count."""

import pytest
import torch

import nzdist
from nzdist import _C
from tests.conftest import int_view

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
SMALL_CHUNKS = nzdist.Lossless(chunk_elems=1024)  # many chunks from small tensors


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match="not in this build"):
        _C._set_decoder("neon-on-x86")


def weights(n, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g) * 0.02).to(dtype)


def roundtrip(t, codec=None, **kw):
    ct = nzdist.compress(t, codec=codec, **kw)
    back = nzdist.decompress(nzdist.CompressedTensor.from_bytes(ct.to_bytes()), **kw)
    assert back.shape == t.shape and back.dtype == t.dtype
    assert torch.equal(int_view(back), int_view(t))
    return ct


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 31, 32, 33, 1023, 1024, 1025, 4096 + 17, 70000])
def test_sizes(dtype, n, decoder, encoder):
    roundtrip(weights(n, dtype), SMALL_CHUNKS)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_16bit_pattern(dtype, decoder, encoder):
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    roundtrip(every, SMALL_CHUNKS)
    roundtrip(every[torch.randperm(every.numel(), generator=torch.Generator().manual_seed(1))])


def test_fp32_specials_and_random_bits(decoder, encoder):
    specials = torch.tensor(
        [
            0x00000000,
            0x80000000,
            0x00000001,
            0x807FFFFF,
            0x7F800000,
            0xFF800000,
            0x7FC00000,
            0x7F800001,
            0xFFFFFFFF,
            0x7F7FFFFF,
            0x00800000,
            0x3F800000,
        ],
        dtype=torch.int64,
    ).to(torch.int32)
    rand = torch.randint(-(2**31), 2**31 - 1, (50000,), dtype=torch.int32, generator=torch.Generator().manual_seed(2))
    mixed = torch.cat([specials.repeat(300), rand, int_view(weights(50000, torch.float32))])
    roundtrip(mixed.view(torch.float32), SMALL_CHUNKS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_bits_are_stored_raw_without_blowup(dtype, encoder):
    n = 100000
    high = 2**16 if dtype != torch.float32 else 2**31
    bits = torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(3))
    t = bits.to(torch.int32).to(torch.int16 if dtype != torch.float32 else torch.int32).view(dtype)
    ct = roundtrip(t)
    assert ct.nbytes <= nzdist.max_compressed_bytes(n, dtype)


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 5), (7,), (5, 3, 2, 9), (1,) * 16])
def test_shapes(shape):
    t = weights(int(torch.Size(shape).numel()), torch.bfloat16).reshape(shape)
    ct = roundtrip(t)
    assert ct.shape == torch.Size(shape)


def test_too_many_dims_is_a_clear_error():
    with pytest.raises(ValueError, match="16 dimensions"):
        nzdist.compress(torch.zeros((1,) * 17, dtype=torch.bfloat16))


def test_non_contiguous_input_and_output():
    base = weights(300 * 200, torch.float16).reshape(300, 200)
    t = base.t()[::2]  # transposed and strided
    assert not t.is_contiguous()
    ct = nzdist.compress(t)
    dest = torch.empty(t.shape[1], t.shape[0], dtype=torch.float16).t()
    assert not dest.is_contiguous()
    nzdist.decompress(ct, out=dest)
    assert torch.equal(int_view(dest), int_view(t))


def test_out_must_match():
    ct = nzdist.compress(weights(100, torch.bfloat16))
    with pytest.raises(ValueError, match="payload holds"):
        nzdist.decompress(ct, out=torch.empty(101, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="payload holds"):
        nzdist.decompress(ct, out=torch.empty(100, dtype=torch.float16))


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_do_not_change_the_bytes(dtype):
    t = weights(300000, dtype)
    one = nzdist.compress(t, codec=SMALL_CHUNKS, threads=1)
    many = nzdist.compress(t, codec=SMALL_CHUNKS, threads=4)
    assert one.to_bytes() == many.to_bytes()
    assert torch.equal(int_view(nzdist.decompress(one, threads=3)), int_view(t))


def test_decompress_batch_decodes_many_payloads():
    ts = [weights(n, dt, seed=n) for n, dt in [(5000, torch.bfloat16), (70000, torch.float32), (3, torch.float16)]]
    cts = [nzdist.compress(t, codec=SMALL_CHUNKS) for t in ts]
    for t, back in zip(ts, nzdist.decompress_batch(cts)):
        assert torch.equal(int_view(back), int_view(t))


def test_unsupported_dtype_names_it():
    for dtype in (torch.float64, torch.int32, torch.uint8, torch.float8_e4m3fn):
        with pytest.raises(TypeError, match=str(dtype)):
            nzdist.compress(torch.zeros(4, dtype=dtype))
    with pytest.raises(TypeError, match="codec"):
        nzdist.compress(torch.zeros(4), codec="lossless")


def test_compresses_real_weights_to_the_entropy_bound(minilm_state):
    """MiniLM bf16: within 1.5% of the order-0 split entropy bound (sign, exponent, mantissa measured apart)."""
    total_bits = bound_bits = 0.0
    for t in minilm_state.values():
        b = t.bfloat16()
        u = int_view(b).to(torch.int32) & 0xFFFF
        for field in (u >> 15, (u >> 7) & 0xFF, u & 0x7F):
            p = torch.bincount(field.flatten()).double()
            p = p[p > 0] / field.numel()
            bound_bits += -(p * p.log2()).sum().item() * field.numel()
        ct = roundtrip(b)
        total_bits += 8 * ct.nbytes
    assert total_bits <= 1.015 * bound_bits


def test_default_chunk_size_per_dtype():
    """fp16 defaults to 128 Ki elements per chunk (its frequency tables cost more per element), bf16/fp32 64 Ki;
    an explicit chunk_elems wins."""
    for dtype, chunk in ((torch.bfloat16, 1 << 16), (torch.float16, 1 << 17), (torch.float32, 1 << 16)):
        assert nzdist.Lossless().chunk_elems_for(dtype) == chunk
        ct = roundtrip(weights(300000, dtype))
        assert ct.header()["chunk_elems"] == chunk
        assert nzdist.compress(weights(3000, dtype), codec=nzdist.Lossy(3, 0)).header()["chunk_elems"] == chunk
    ct = nzdist.compress(weights(300000, torch.float16), codec=nzdist.Lossless(chunk_elems=4096))
    assert ct.header()["chunk_elems"] == 4096
    with pytest.raises(ValueError, match="chunk_elems"):
        nzdist.Lossless(chunk_elems=1000)

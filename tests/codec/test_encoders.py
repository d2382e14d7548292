"""Every chunk encoder (the scalar reference and the SIMD ones this build has) writes the same bytes."""

import pytest
import torch

import nzdist
from nzdist import _C
from tests.conftest import int_view

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def test_simd_divide_is_exact():
    assert _C._encoder_self_check() == 0


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="not in this build"):
        _C._set_encoder("neon-on-x86")


def payload_bytes(t, codec, encoder):
    _C._set_encoder(encoder)
    try:
        return nzdist.compress(t, codec=codec, threads=1).to_bytes()
    finally:
        _C._set_encoder("auto")


def cases():
    g = torch.Generator().manual_seed(5)
    for dtype in DTYPES:
        w = (torch.randn(70001, generator=g) * 0.02).to(dtype)
        yield f"{dtype}-weights", w
        yield f"{dtype}-constant", torch.full((5000,), 0.5, dtype=dtype)  # one symbol: frequency 2^11
        yield f"{dtype}-two-values", torch.tensor([0.5, -0.25], dtype=dtype).repeat(2049)
        bits = torch.randint(0, 2**16 if dtype != torch.float32 else 2**31, (40000,), generator=g)
        yield (
            f"{dtype}-random-bits",
            bits.to(torch.int32).to(torch.int16 if dtype != torch.float32 else torch.int32).view(dtype),
        )
        for n in (1, 31, 32, 33, 1023, 1025, 4096 + 17):
            yield f"{dtype}-n{n}", w[:n].clone()
    # fp32 whose low mantissa bits are zero (bf16 origin): the byte fields become coded
    yield "fp32-from-bf16", (torch.randn(30000, generator=g) * 0.02).bfloat16().float()


CODECS = {
    "lossless-1k": nzdist.Lossless(chunk_elems=1024),
    "lossless": nzdist.Lossless(),
    "lossy-3-normalised": nzdist.Lossy(mantissa_bits=3, block_size=256, chunk_elems=1024),
    "lossy-0": nzdist.Lossy(mantissa_bits=0, block_size=0, chunk_elems=2048),
    "lossy-5": nzdist.Lossy(mantissa_bits=5, block_size=0),
}


@pytest.mark.parametrize("encoder", [e for e in _C._encoders() if e != "scalar"])
@pytest.mark.parametrize("codec", list(CODECS))
def test_every_encoder_writes_the_reference_bytes(encoder, codec):
    for name, t in cases():
        if codec == "lossy-0" and t.isnan().any():
            continue  # refused by the codec (NaN needs a mantissa bit)
        ref = payload_bytes(t, CODECS[codec], "scalar")
        assert payload_bytes(t, CODECS[codec], encoder) == ref, name


@pytest.mark.parametrize("encoder", _C._encoders())
def test_real_weights_every_encoder(minilm_state, encoder):
    for name, t in list(minilm_state.items())[:12]:
        for dtype in DTYPES:
            x = t.to(dtype)
            ref = payload_bytes(x, nzdist.Lossless(), "scalar")
            assert payload_bytes(x, nzdist.Lossless(), encoder) == ref, (name, dtype)
            back = nzdist.decompress(nzdist.CompressedTensor.from_bytes(ref))
            assert torch.equal(int_view(back), int_view(x))


def normalise(counts, n, scale=1 << 11):
    """FORMAT.md's frequency normalisation (the encoder's `normalise`), in Python."""
    freq = [0 if c == 0 else max(1, (c * scale + n // 2) // n) for c in counts]
    top = max(range(len(counts)), key=lambda s: (counts[s], -s))
    diff = scale - sum(freq)
    if diff >= 0:
        freq[top] += diff
    while diff < 0:
        big = max(range(len(freq)), key=lambda s: (freq[s], -s))
        take = min(-diff, freq[big] - 1)
        freq[big] -= take
        diff += take
    return freq


@pytest.mark.parametrize("encoder", _C._encoders())
@pytest.mark.parametrize(
    "dtype,n", [(torch.bfloat16, 65536), (torch.float16, 131072), (torch.bfloat16, 5000), (torch.float32, 65536)]
)
def test_first_chunk_table_is_the_normalised_histogram(dtype, n, encoder):
    """The frequency table of field 0 is the normalised histogram of sign|exponent|top mantissa bits, whichever
    way the encoder counted (per field, or one histogram of whole 16-bit patterns for large chunks)."""
    x = (torch.randn(n, generator=torch.Generator().manual_seed(9)) * 0.02).to(dtype)
    buf = payload_bytes(x, nzdist.Lossless(), encoder)
    h = nzdist.CompressedTensor.from_bytes(buf).header()
    assert h["num_chunks"] == 1
    chunk = h["header_bytes"] + 16  # the index: 2 offsets, padded to 16
    assert buf[chunk + 8] & 1  # field 0 coded
    width, shift = {torch.bfloat16: (10, 6), torch.float16: (8, 8), torch.float32: (10, 22)}[dtype]
    u = int_view(x).to(torch.int64) & ((1 << (8 * x.element_size())) - 1)
    counts = torch.bincount(u >> shift, minlength=1 << width).tolist()
    want = [(s, f) for s, f in enumerate(normalise(counts, n)) if f]
    field = chunk + 16
    n_used = int.from_bytes(buf[field : field + 2], "little")
    entries = [int.from_bytes(buf[field + 136 + 3 * i : field + 139 + 3 * i], "little") for i in range(n_used)]
    assert [(e & 0x3FF, (e >> 10) + 1) for e in entries] == want

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
        yield f"{dtype}-random-bits", bits.to(torch.int32).to(
            torch.int16 if dtype != torch.float32 else torch.int32).view(dtype)
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

"""The training path's codec entry points: EncodeBatch (one size read for many tensors), decode_into (decode
where the bytes lie, errors into words, nothing raised) and codec_stats (what a GPU would wait on)."""

from __future__ import annotations

import pytest
import torch

import nzdist
from nzdist.codec import EncodeBatch, codec_stats, decode_into, read_back


def _weights(*shape, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * 0.02).to(dtype)


def test_encode_batch_writes_the_bytes_compress_writes():
    tensors = [_weights(300, 70), _weights(5, dtype=torch.float32), _weights(0), _weights(4096, dtype=torch.float16)]
    codecs = [None, nzdist.Lossless(), None, nzdist.Lossy(mantissa_bits=3, block_size=512)]
    codec_stats(reset=True)
    batch = EncodeBatch(tensors, codecs)
    payloads = batch.finish(read_back(batch.status))
    assert codec_stats().as_dict() == {"decode_calls": 0, "encode_calls": 1, "host_syncs": 1}
    for t, c, p in zip(tensors, codecs, payloads):
        assert p.to_bytes() == nzdist.compress(t, codec=c).to_bytes()
        assert p.shape == t.shape and p.dtype == t.dtype


def test_encode_batch_checks_its_inputs():
    with pytest.raises(ValueError, match="codecs"):
        EncodeBatch([_weights(4)], [])
    with pytest.raises(TypeError, match="dtype|int"):
        EncodeBatch([torch.arange(4)], [None])
    batch = EncodeBatch([_weights(4)], [None])
    with pytest.raises(ValueError, match="status for 0"):
        batch.finish([])


def test_decode_into_reports_instead_of_raising_and_decodes_the_rest():
    good, other = _weights(64, 32), _weights(1000, dtype=torch.float32)
    a, b = nzdist.compress(good).data, nzdist.compress(other).data.clone()
    b[b.numel() // 2] ^= 0x10
    outs = [torch.empty_like(good), torch.empty_like(other), torch.empty(7, dtype=torch.bfloat16)]
    errors = torch.zeros(3, dtype=torch.int32)
    codec_stats(reset=True)
    decode_into([a, b, a], outs, errors, slots=False)
    assert codec_stats().as_dict() == {"decode_calls": 1, "encode_calls": 0, "host_syncs": 0}
    words = errors.tolist()
    assert words[0] == 0 and torch.equal(outs[0].view(torch.int16), good.view(torch.int16))
    assert words[1] != 0  # corrupt: reported in its word
    assert words[2] == nzdist._C.ERROR_BITS["mismatch"]  # 2048 elements do not fit a 7-element output


def test_decode_into_non_contiguous_outputs_and_error_index():
    w = _weights(32, 16)
    payload = nzdist.compress(w.t().contiguous()).data
    out = torch.empty(32, 16, dtype=torch.bfloat16).t()  # non-contiguous view
    errors = torch.zeros(5, dtype=torch.int32)
    decode_into([payload], [out], errors, slots=False, error_index=[3])
    assert errors.tolist() == [0] * 5 and torch.equal(out.contiguous(), w.t().contiguous())
    with pytest.raises(ValueError, match="error_index"):
        decode_into([payload], [out], errors, slots=False, error_index=[5])
    with pytest.raises(TypeError, match="int32"):
        decode_into([payload], [out], errors.long(), slots=False)


def test_decompress_counts_the_error_read_a_gpu_would_make():
    ct = nzdist.compress(_weights(100))
    codec_stats(reset=True)
    nzdist.decompress(ct)
    nzdist.decompress(ct, check=False)
    assert codec_stats().as_dict() == {"decode_calls": 2, "encode_calls": 0, "host_syncs": 1}

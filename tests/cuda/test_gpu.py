"""GPU codec on a real device: CPU-encoded -> GPU-decoded and GPU-encoded -> CPU-decoded, bit-exact (and byte-
identical payloads), for every dtype, special bit patterns, odd sizes, lossy modes, batches and shards laid end
to end; corrupt payloads raise FormatError. Skipped without a GPU or without the built extension."""

from __future__ import annotations

import pytest
import torch

import nzdist
from nzdist.codec import cuda

import cuda_cases as cases

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda.available()),
    reason="needs a CUDA GPU and nzdist built with its CUDA kernels",
)


def codec_for(keep, block, chunk):
    if keep is None:
        return nzdist.Lossless(chunk_elems=chunk)
    return nzdist.Lossy(mantissa_bits=keep, block_size=block, chunk_elems=chunk)


def both_ways(t: torch.Tensor, keep=None, block=0, chunk=1 << 16):
    ct = nzdist.compress(t, codec=codec_for(keep, block, chunk))
    expect = nzdist.decompress(ct)
    # CPU payload -> GPU decode, every kernel variant
    for variant in cuda.variants():
        out = torch.full(t.shape, float("nan"), dtype=t.dtype, device="cuda")
        cuda.decompress(ct.data.cuda(), out, chunk_elems=chunk, variant=variant)
        assert torch.equal(cases.bits(out.cpu()), cases.bits(expect)), variant
    # GPU encode -> identical bytes -> CPU decode
    payload = cuda.compress(t.cuda(), keep_bits=keep, block_size=block, chunk_elems=chunk)
    assert payload.numel() == ct.nbytes
    assert torch.equal(payload.cpu(), ct.data)
    back = nzdist.decompress(nzdist.CompressedTensor(payload.cpu(), t.shape, t.dtype))
    assert torch.equal(cases.bits(back), cases.bits(expect))
    # and verify mode agrees
    for variant in cuda.variants():
        out2 = torch.empty(t.shape, dtype=t.dtype, device="cuda")
        cuda.decompress(payload, out2, chunk_elems=chunk, verify=True, variant=variant)
        assert torch.equal(cases.bits(out2.cpu()), cases.bits(expect)), variant


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_weights(dtype):
    both_ways(cases.weights(300_000, dtype).reshape(300, 1000))
    both_ways(cases.weights(50_000, dtype), chunk=4096)


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_every_bit_pattern(dtype):
    both_ways(cases.all_patterns(dtype), chunk=2048)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("n", cases.SIZES)
def test_odd_sizes(dtype, n):
    both_ways(cases.weights(n, dtype, seed=n), chunk=1024)


def test_second_field_coded():
    both_ways(cases.fp16_origin_bf16(200_000), chunk=4096)


def test_three_coded_fields_fp32():
    both_ways(cases.weights(200_000, torch.float32, 4).bfloat16().float(), chunk=4096)


@pytest.mark.parametrize("variant", cuda.variants())
def test_many_chunks_one_launch_per_variant(variant):
    """Thousands of warps at once: v3's pooled tables are contended when most chunks code two fields."""
    ts = [
        cases.fp16_origin_bf16(300_000),
        cases.weights(700_000, torch.bfloat16, 8),
        cases.weights(90_000, torch.float32, 9),
    ]
    payloads = [cuda.compress(t.cuda(), chunk_elems=1024) for t in ts]
    outs = [torch.empty(t.shape, dtype=t.dtype, device="cuda") for t in ts]
    cuda.decompress_batch(payloads, outs, chunk_elems=1024, variant=variant)
    for o, t in zip(outs, ts):
        assert torch.equal(cases.bits(o.cpu()), cases.bits(t))


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_lossy(dtype):
    t = cases.weights(90_000, dtype, seed=7)
    t[::97] = 0
    t[5] = float("inf")
    for keep, block in cases.lossy_settings(dtype):
        both_ways(t, keep=keep, block=block, chunk=8192)


def test_batch_and_shards_end_to_end():
    shards = [cases.weights(20_000 + 37 * r, torch.bfloat16, r) for r in range(4)]
    payloads = [cuda.compress(s.cuda(), chunk_elems=4096) for s in shards]
    cap = (max(p.numel() for p in payloads) + 15) // 16 * 16
    buf = torch.zeros(cap * len(shards), dtype=torch.uint8, device="cuda")
    for r, p in enumerate(payloads):
        buf[r * cap : r * cap + p.numel()] = p
    flat = torch.empty(sum(s.numel() for s in shards), dtype=torch.bfloat16, device="cuda")
    outs = list(flat.split([s.numel() for s in shards]))
    cuda.decompress_batch([buf[r * cap : (r + 1) * cap] for r in range(4)], outs, chunk_elems=4096)
    assert torch.equal(flat.cpu(), torch.cat(shards))


def test_non_contiguous_out_and_unaligned_payload():
    t = cases.weights(4096, torch.float16).reshape(64, 64)
    payload = cuda.compress(t.cuda())
    shifted = torch.empty(payload.numel() + 1, dtype=torch.uint8, device="cuda")
    shifted[1:] = payload
    out = torch.empty(64, 64, dtype=torch.float16, device="cuda").t()
    cuda.decompress(shifted[1:], out)
    assert torch.equal(out.cpu(), t)


def test_corruption_raises_format_error():
    t = cases.weights(20_000, torch.bfloat16)
    payload = cuda.compress(t.cuda(), chunk_elems=1024)
    bad = payload.clone()
    bad[0] ^= 0xFF  # magic
    with pytest.raises(nzdist.FormatError):
        cuda.decompress(bad, torch.empty(20_000, dtype=torch.bfloat16, device="cuda"))
    bad = payload.clone()
    bad[-5] ^= 0x10  # inside the last chunk
    for variant in cuda.variants():
        with pytest.raises(nzdist.FormatError):
            cuda.decompress(bad, torch.empty(20_000, dtype=torch.bfloat16, device="cuda"), verify=True, variant=variant)
    with pytest.raises(nzdist.FormatError):
        cuda.decompress(payload, torch.empty(20_000, dtype=torch.float16, device="cuda"))


def test_nan_with_zero_mantissa_bits_is_rejected():
    t = cases.weights(100, torch.bfloat16)
    t[3] = float("nan")
    with pytest.raises(ValueError):
        cuda.compress(t.cuda(), keep_bits=0)


def test_runs_on_the_current_stream():
    t = cases.weights(200_000, torch.bfloat16).cuda()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        payload = cuda.compress(t)
        out = torch.empty_like(t)
        errors = cuda.decompress_batch([payload], [out], check=False)
    s.synchronize()
    assert errors.cpu().tolist() == [0]
    assert torch.equal(out, t)


def test_compress_batch_one_sync_and_into_buffers():
    ts = [cases.weights(n, torch.bfloat16, n).cuda() for n in (0, 1, 5000, 70_000)]
    payloads = cuda.compress_batch(ts, chunk_elems=4096)
    for t, p in zip(ts, payloads):
        assert torch.equal(p.cpu(), nzdist.compress(t.cpu(), codec=nzdist.Lossless(chunk_elems=4096)).data)
    bufs = [torch.zeros(p.numel() + 64, dtype=torch.uint8, device="cuda") for p in payloads]
    small = torch.zeros(8, dtype=torch.uint8, device="cuda")
    again = cuda.compress_batch(ts, chunk_elems=4096, outs=bufs[:-1] + [small])
    for p, q, b in zip(payloads, again[:-1], bufs[:-1]):
        assert q.data_ptr() == b.data_ptr() and torch.equal(p, q)
    assert again[-1].data_ptr() != small.data_ptr() and torch.equal(again[-1], payloads[-1])


def test_prepared_plans_replay_identically():
    """What `nzdist bench gpu` times: an EncodePlan's write and a DecodePlan's launch repeated give the same bytes."""
    t = cases.weights(100_000, torch.bfloat16).cuda()
    plan = cuda.EncodePlan([t], None, 0, 4096)
    plan.stage()
    out = torch.empty(plan.sizes()[0], dtype=torch.uint8, device="cuda")
    for _ in range(3):
        plan.write([out])
    assert torch.equal(out.cpu(), nzdist.compress(t.cpu(), codec=nzdist.Lossless(chunk_elems=4096)).data)
    for variant in cuda.variants():
        o = torch.empty_like(t)
        dplan = cuda.DecodePlan([out], [o], chunk_elems=4096, variant=variant)
        for _ in range(3):
            errors = dplan.launch()
        cuda.raise_on_errors(errors)
        assert torch.equal(o, t)

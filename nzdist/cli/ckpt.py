"""``nzdist ckpt``: look inside nzdist checkpoints and convert them back to standard formats.

nzdist ckpt inspect PATH [--verify] [--all]       sizes and ratio per tensor and per kind, delta chain
nzdist ckpt convert PATH OUT --dense [--format dcp|safetensors]
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from nzdist.checkpoint.files import Checkpoint
from nzdist.checkpoint.format import CheckpointError, ChecksumError


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def inspect(path: str, verify: bool = False, show_all: bool = False, out=sys.stdout) -> dict:
    from nzdist.bench.common import format_table

    with Checkpoint(path) as ck:
        man = ck.manifest
        print(
            f"checkpoint {ck.path}\n  id {man.checkpoint_id}  codec {man.codec}  format v{man.format_version}", file=out
        )
        chain = []
        c = ck
        while c.manifest.base is not None:
            c = c.base()
            chain.append(str(c.path))
        print(
            f"  {'delta, chain depth ' + str(man.chain_depth) + ': ' + ' <- '.join(chain) if chain else 'full'}",
            file=out,
        )
        per_tensor: dict[str, dict] = defaultdict(
            lambda: {"dense": 0, "stored": 0, "enc": set(), "kind": "", "chunks": 0}
        )
        for idx, rec in ck.metadata.storage_data.items():
            row = per_tensor[idx.fqn]
            row["dense"] += rec.dense_nbytes
            row["stored"] += rec.length
            row["enc"].add(rec.encoding)
            row["kind"] = rec.kind
            row["chunks"] += 1
        dtypes = {
            fqn: str(getattr(getattr(md, "properties", None), "dtype", "object")).replace("torch.", "")
            for fqn, md in ck.metadata.state_dict_metadata.items()
        }
        rows = [
            {
                "tensor": fqn,
                "kind": r["kind"],
                "dtype": dtypes.get(fqn, "?"),
                "chunks": r["chunks"],
                "encoding": "+".join(sorted(r["enc"])),
                "dense": _fmt_bytes(r["dense"]),
                "stored": _fmt_bytes(r["stored"]),
                "ratio": r["dense"] / r["stored"] if r["stored"] else float("inf"),
            }
            for fqn, r in sorted(per_tensor.items())
        ]
        cols = ["tensor", "kind", "dtype", "chunks", "encoding", "dense", "stored", "ratio"]
        big = sorted(rows, key=lambda r: -per_tensor[r["tensor"]]["dense"])
        shown = rows if show_all else sorted(big[:25], key=lambda r: r["tensor"])
        print(format_table(shown, cols), file=out)
        if not show_all and len(rows) > 25:
            print(f"  ({len(rows) - 25} smaller entries not shown; --all shows them)", file=out)
        kinds: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
        for fqn, r in per_tensor.items():
            k = kinds[(r["kind"] or "other", dtypes.get(fqn, "?"))]
            k[0] += r["dense"]
            k[1] += r["stored"]
        dense = sum(v[0] for v in kinds.values())
        stored = sum(v[1] for v in kinds.values())
        summary = [
            {
                "kind": k,
                "dtype": d,
                "dense": _fmt_bytes(a),
                "stored": _fmt_bytes(b),
                "ratio": a / b if b else float("inf"),
            }
            for (k, d), (a, b) in sorted(kinds.items())
        ]
        summary.append(
            {
                "kind": "TOTAL",
                "dtype": "",
                "dense": _fmt_bytes(dense),
                "stored": _fmt_bytes(stored),
                "ratio": dense / stored if stored else float("inf"),
            }
        )
        print(format_table(summary, ["kind", "dtype", "dense", "stored", "ratio"]), file=out)
        if verify:
            recs = list(ck.metadata.storage_data.items())
            with tqdm(
                total=sum(r.length for _, r in recs), unit="B", unit_scale=True, desc="verify", file=sys.stderr
            ) as bar:
                for idx, rec in recs:
                    if ck.chunk_info(idx) is not None:
                        ck.read_tensor(idx)  # checks the crc of this record and of its chain, and decodes it
                    else:
                        ck.read_record(rec)
                    bar.update(rec.length)
            for name, (_size, crc) in sorted(man.files.items()):
                with open(ck.path / name, "rb") as f:
                    got = 0
                    while chunk := f.read(1 << 24):
                        got = zlib.crc32(chunk, got)
                if got != crc:
                    raise ChecksumError(f"{ck.path / name}: whole-file checksum mismatch (file corrupted)")
            print(
                f"verified {len(recs)} records and {len(man.files)} data files: all checksums match and every "
                "record decodes",
                file=out,
            )
        return {"dense": dense, "stored": stored, "tensors": len(rows)}


def convert(path: str, out: str, fmt: str = "dcp") -> None:
    """Decode everything (following the delta chain) and write a standard DCP checkpoint or a safetensors file."""
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    from nzdist.checkpoint.api import _dcp_call
    from nzdist.checkpoint.storage import NzdistStorageReader

    with Checkpoint(path) as ck:
        total = sum(r.length for r in ck.metadata.storage_data.values())
    with tqdm(total=total, unit="B", unit_scale=True, desc="decode", file=sys.stderr) as bar, _dcp_call():
        # DCP's own "load everything into an empty state dict" (it rebuilds the nesting from the metadata).
        reader = NzdistStorageReader(path, progress=bar.update)
        try:
            sd = _load_state_dict_from_keys(storage_reader=reader)
        finally:
            reader.close()
    if fmt == "dcp":
        with tqdm(total=1, desc="write DCP", file=sys.stderr) as bar, _dcp_call():
            dcp.save(sd, storage_writer=dcp.FileSystemWriter(out), no_dist=True)
            bar.update(1)
        return
    from safetensors.torch import save_file

    flat, skipped = {}, []

    def walk(obj, prefix):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{prefix}{i}.")
        elif isinstance(obj, torch.Tensor):
            flat[prefix[:-1]] = obj.contiguous()
        else:
            skipped.append(prefix[:-1])

    walk(sd, "")
    with tqdm(total=1, desc="write safetensors", file=sys.stderr) as bar:
        save_file(flat, out, metadata={"nzdist.skipped_non_tensor_keys": ",".join(skipped)})
        bar.update(1)
    if skipped:
        print(
            f"safetensors holds tensors only; {len(skipped)} non-tensor entries left out: "
            f"{', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nzdist ckpt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inspect", help="sizes and ratios per tensor and per kind")
    p.add_argument("path")
    p.add_argument("--verify", action="store_true", help="read and decode every record, checking checksums")
    p.add_argument("--all", action="store_true", help="list every entry, not just the 25 largest")
    c = sub.add_parser("convert", help="write a dense standard checkpoint")
    c.add_argument("path")
    c.add_argument("out")
    c.add_argument(
        "--dense",
        action="store_true",
        required=True,
        help="decode to dense tensors (the only conversion there is; required to say so)",
    )
    c.add_argument(
        "--format",
        choices=("dcp", "safetensors"),
        default=None,
        help="default: safetensors when OUT ends in .safetensors, else a DCP directory",
    )
    args = parser.parse_args(argv)
    try:
        if args.cmd == "inspect":
            inspect(args.path, verify=args.verify, show_all=args.all)
        else:
            fmt = args.format or ("safetensors" if str(args.out).endswith(".safetensors") else "dcp")
            if Path(args.out).exists():
                print(f"nzdist ckpt convert: {args.out} exists; refusing to overwrite", file=sys.stderr)
                return 2
            convert(args.path, args.out, fmt)
    except CheckpointError as e:
        print(f"nzdist ckpt {args.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

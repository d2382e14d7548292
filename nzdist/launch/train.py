"""One training entry: the same small byte-level GPT on the Python standard library's sources, sharded by
FSDP2 (``nzdist.fsdp``) or DeepSpeed ZeRO-3 (``nzdist.deepspeed``), chosen by ``--backend``.

    deepspeed --num_gpus 2 launch/train.py --deepspeed_config configs/neuzip_zero.json
    torchrun --nproc_per_node 2 launch/train.py --backend deepspeed --config configs/neuzip_zero.json
    torchrun --nproc_per_node 2 launch/train.py --backend fsdp --config configs/neuzip_zero.json
    DS_ACCELERATOR=cpu ...   # on CPU (gloo)

``--compare-dense`` also trains the same config without its ``"neuzip"`` section in the same process and
reports both (losses must match bit for bit; all-gather bytes and step times side by side).

A front end over :mod:`nzdist.experiments`: the model, data and both training loops are the harness's; the FSDP
run's settings come from the DeepSpeed JSON through ``nzdist.experiments.config.from_deepspeed``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict

from nzdist.experiments.config import default_deepspeed_config
from nzdist.experiments.data import stdlib_bytes
from nzdist.experiments.dist import end_distributed, rank_world
from nzdist.experiments.models import ModelConfig
from nzdist.experiments.zero3 import dense_config, train_deepspeed


def train_fsdp(
    ds_config: dict, steps: int, model_cfg: ModelConfig, seed: int = 0, tokens=None, freeze: tuple = ()
) -> dict:
    """The same model, data and optimizer settings under FSDP2: ``nzdist.fsdp`` when the config has a
    ``"neuzip"`` section, torch's own ``fully_shard`` otherwise (``from_deepspeed`` maps the rest)."""
    from nzdist.experiments import fsdp
    from nzdist.experiments.config import from_deepspeed
    from nzdist.experiments.dist import init_distributed, resolve_device

    cfg, kind = from_deepspeed(
        ds_config,
        steps=steps,
        seed=seed,
        d_model=model_cfg.d_model,
        n_layer=model_cfg.n_layer,
        n_head=model_cfg.n_head,
        seq_len=model_cfg.seq_len,
        freeze=freeze,
    )
    _, _, device = init_distributed(resolve_device(cfg), "launch/train.py --backend fsdp")
    record, _, _ = fsdp.train(kind, cfg, stdlib_bytes(cfg.data_bytes) if tokens is None else tokens, device)
    return {
        "backend": "fsdp",
        "neuzip": "neuzip" in ds_config,
        "losses": record["losses"],
        "step_times": record["step_times"],
        "comm": record["comm_stats"],
        "memory": record["memory"],
        "wire": record["wire"],
    }


# -------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="nzdist.launch.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--backend", choices=("deepspeed", "fsdp"), default="deepspeed")
    p.add_argument(
        "--config",
        "--deepspeed_config",
        dest="config",
        default=default_deepspeed_config(),
        help='DeepSpeed JSON config; its top-level "neuzip" section configures nzdist',
    )
    p.add_argument("--deepspeed", action="store_true", help="accepted for DeepSpeed launcher compatibility")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=ModelConfig.d_model)
    p.add_argument("--layers", type=int, default=ModelConfig.n_layer)
    p.add_argument("--seq-len", type=int, default=ModelConfig.seq_len)
    p.add_argument("--dense", action="store_true", help='ignore the "neuzip" section (the baseline)')
    p.add_argument(
        "--compare-dense",
        action="store_true",
        help='also train the config without "neuzip" in this process and compare',
    )
    p.add_argument("--save", default=None, help="checkpoint directory (DeepSpeed backend)")
    p.add_argument("--save-at", type=int, default=None, help="save after this many steps")
    p.add_argument("--load", default=None, help="resume from the latest checkpoint in this directory")
    p.add_argument("--start-step", type=int, default=0, help="global step of the first step (data position)")
    p.add_argument("--freeze", default="", help="comma-separated parameter name prefixes to freeze")
    p.add_argument("--json", default=None, help="rank 0 writes every rank's results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nzdist.deepspeed.config import load_ds_config

    ds_config = load_ds_config(args.config)
    if args.dense:
        ds_config = dense_config(ds_config)
    model_cfg = ModelConfig(d_model=args.d_model, n_layer=args.layers, seq_len=args.seq_len)
    tokens = stdlib_bytes()
    freeze = tuple(x for x in args.freeze.split(",") if x)
    runs = []
    if args.backend == "deepspeed":
        if args.compare_dense:
            runs.append(
                train_deepspeed(
                    dense_config(ds_config),
                    args.steps,
                    model_cfg,
                    args.seed,
                    tokens,
                    start_step=args.start_step,
                    load_dir=args.load,
                    freeze=freeze,
                )
            )
        runs.append(
            train_deepspeed(
                ds_config,
                args.steps,
                model_cfg,
                args.seed,
                tokens,
                start_step=args.start_step,
                load_dir=args.load,
                save_dir=args.save,
                save_at=args.save_at,
                freeze=freeze,
            )
        )
    else:
        if args.compare_dense:
            runs.append(train_fsdp(dense_config(ds_config), args.steps, model_cfg, args.seed, tokens, freeze=freeze))
        runs.append(train_fsdp(ds_config, args.steps, model_cfg, args.seed, tokens, freeze=freeze))
    _report(args, runs)
    end_distributed()
    return 0


def _report(args, runs) -> None:
    import torch.distributed as td

    rank, world = rank_world()
    gathered = [None] * world
    if world > 1:
        td.all_gather_object(gathered, runs)
    else:
        gathered = [runs]
    if rank != 0:
        return
    for run in runs:
        c = run["comm"]
        ratio = c["ratio"] if c["dense_bytes"] else float("nan")
        step = sorted(run["step_times"])[len(run["step_times"]) // 2] if run["step_times"] else math.nan
        print(
            f"[{run['backend']}{' +neuzip' if run['neuzip'] else ''}] steps={len(run['losses'])} "
            f"loss {run['losses'][0]:.4f} -> {run['losses'][-1]:.4f}  median step {step * 1e3:.1f} ms  "
            f"all-gather payload/dense {c['payload_bytes']}/{c['dense_bytes']} = {ratio:.3f}",
            flush=True,
        )
    if args.compare_dense and len(runs) == 2:
        same = all(r[0]["losses"] == r[1]["losses"] for r in gathered)
        print(f"losses bit-identical to the dense baseline on every rank: {same}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "model": asdict(ModelConfig(args.d_model, n_layer=args.layers, seq_len=args.seq_len)),
                    "ranks": gathered,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    sys.exit(main())

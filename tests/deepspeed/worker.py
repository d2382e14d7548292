"""Runs under `deepspeed --num_gpus 2` or `torchrun --nproc_per_node 2` (DS_ACCELERATOR=cpu) for
tests/deepspeed/test_multiprocess.py: trains several ZeRO-3 engines in one process (baseline and nzdist, same
seed and data) and writes every rank's results as JSON; the test asserts on them."""

import argparse
import copy
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import torch.distributed as td  # noqa: E402

from nzdist.deepspeed.config import load_ds_config  # noqa: E402
from nzdist.experiments.data import stdlib_bytes  # noqa: E402
from nzdist.experiments.dist import end_distributed  # noqa: E402
from nzdist.experiments.models import ModelConfig  # noqa: E402
from nzdist.experiments.zero3 import dense_config, train_deepspeed  # noqa: E402

MODEL = ModelConfig(d_model=64, n_layer=2, n_head=4, seq_len=32)
FROZEN = ("embed", "blocks.0")


def edit_between_steps(cfg, tokens, freeze=()):
    """3 steps, then rank 0 rewrites two weights inside GatheredParameters(modifier_rank=0) (DeepSpeed then
    re-partitions them with has_been_updated=True), then 3 more steps. Returns this rank's losses."""
    import deepspeed

    from nzdist.deepspeed import initialize
    from nzdist.experiments.data import batch_for_step
    from nzdist.experiments.models import build_model, freeze_params

    model = build_model(MODEL, 0)
    freeze_params(model, freeze)
    engine, *_ = initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=cfg
    )
    rank, world = td.get_rank(), td.get_world_size()
    losses = []

    def step(i):
        x, y = batch_for_step(tokens, i, engine.train_micro_batch_size_per_gpu(), MODEL.seq_len, rank, world, 0)
        loss = engine(x, y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())

    for i in range(3):
        step(i)
    edited = [engine.module.head.weight, engine.module.blocks[0].fc.weight, engine.module.embed.weight]
    with deepspeed.zero.GatheredParameters(edited, modifier_rank=0):
        if rank == 0:
            for p in edited:
                p.data.mul_(0.5)
    for i in range(3, 6):
        step(i)
    engine.destroy()
    return {"losses": losses}


def fp32_digest(engine):
    """sha256 of every trainable parameter's full fp32 master and Adam moments, read through deepspeed.utils
    (collective: every rank calls it, parameters in the same order), after halving the first one's master and
    exp_avg through the setters: what a setter writes must survive the re-encode."""
    import hashlib

    from deepspeed.utils import (
        safe_get_full_fp32_param,
        safe_get_full_optimizer_state,
        safe_set_full_fp32_param,
        safe_set_full_optimizer_state,
    )

    first = next(p for p in engine.module.parameters() if p.requires_grad)
    safe_set_full_fp32_param(first, safe_get_full_fp32_param(first) * 0.5)
    safe_set_full_optimizer_state(first, safe_get_full_optimizer_state(first, "exp_avg") * 0.5, "exp_avg")

    h = hashlib.sha256()
    for p in engine.module.parameters():
        if p.requires_grad:
            for t in (
                safe_get_full_fp32_param(p),
                safe_get_full_optimizer_state(p, "exp_avg"),
                safe_get_full_optimizer_state(p, "exp_avg_sq"),
            ):
                h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def lossy_blocking_gather_is_exact(cfg, tokens):
    """Lossy frozen weights: the forward uses lossy payloads, but GatheredParameters (saves, user code) must
    return the exact partitions. Returns whether the gathered frozen weights equal the initial ones bit for bit."""
    import deepspeed
    import torch

    from nzdist.deepspeed import initialize
    from nzdist.experiments.data import batch_for_step
    from nzdist.experiments.models import build_model, freeze_params

    model = build_model(MODEL, 0)
    freeze_params(model, FROZEN)
    reference = {n: p.detach().to(torch.bfloat16).clone() for n, p in model.named_parameters() if not p.requires_grad}
    engine, *_ = initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=cfg
    )
    rank, world = td.get_rank(), td.get_world_size()
    for i in range(2):
        x, y = batch_for_step(tokens, i, engine.train_micro_batch_size_per_gpu(), MODEL.seq_len, rank, world, 0)
        engine.backward(engine(x, y))
        engine.step()
    frozen = [(n, p) for n, p in engine.module.named_parameters() if n in reference]
    with deepspeed.zero.GatheredParameters([p for _, p in frozen]):
        exact = all(torch.equal(p.data.view(torch.int16), reference[n].view(torch.int16)) for n, p in frozen)
    engine.destroy()
    return {"exact": exact, "checked": len(frozen)}


def host_reads(cfg, tokens, layers: int) -> dict:
    """2 warm-up steps, then host reads made from nzdist code during one forward + backward (tests/support.py
    HostReads) and nzdist.codec_stats of the forward + backward and of the step."""
    import nzdist
    from nzdist.deepspeed import initialize
    from nzdist.experiments.data import batch_for_step
    from nzdist.experiments.models import build_model

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from support import HostReads

    config = ModelConfig(d_model=64, n_layer=layers, n_head=4, seq_len=32)
    model = build_model(config, 0)
    engine, *_ = initialize(model=model, model_parameters=list(model.parameters()), config=cfg)
    rank, world = td.get_rank(), td.get_world_size()

    def batch(i):
        return batch_for_step(tokens, i, engine.train_micro_batch_size_per_gpu(), config.seq_len, rank, world, 0)

    for i in range(2):
        x, y = batch(i)
        engine.backward(engine(x, y))
        engine.step()
    x, y = batch(2)
    nzdist.codec_stats(reset=True)
    with HostReads() as reads:
        loss = engine(x, y)
        engine.backward(loss)
    fwd_bwd = nzdist.codec_stats(reset=True).as_dict()
    engine.step()
    step = nzdist.codec_stats(reset=True).as_dict()
    out = {
        "params": len(engine.neuzip.params),
        "fwd_bwd_host_reads": reads.count,
        "fwd_bwd_sites": dict(reads.sites),
        "fwd_bwd": fwd_bwd,
        "step": step,
        "sub_groups": len(engine.optimizer.fp16_groups),
    }
    engine.destroy()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", choices=("parity_ckpt", "parity_zeropp"), required=True)
    ap.add_argument("--config", "--deepspeed_config", dest="config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ckpt", default=None)
    ap.add_argument("--local_rank", type=int, default=None)
    args = ap.parse_args()

    cfg = load_ds_config(args.config)
    tokens = stdlib_bytes(1 << 20)
    runs = {}
    runs["dense"] = train_deepspeed(dense_config(cfg), 20, MODEL, tokens=tokens)
    if args.scenario == "parity_ckpt":
        # Checkpoints go through nzdist's compressed checkpoint engine ("checkpoint": {"compress": true}).
        ckpt = copy.deepcopy(cfg)
        ckpt["neuzip"]["checkpoint"] = {"compress": True}
        runs["neuzip"] = train_deepspeed(ckpt, 20, MODEL, tokens=tokens, save_dir=args.ckpt, save_at=10)
        runs["resumed"] = train_deepspeed(ckpt, 10, MODEL, tokens=tokens, start_step=10, load_dir=args.ckpt)
    else:
        dense_at_rest = copy.deepcopy(cfg)  # bf16 partitions kept dense between steps, as DeepSpeed keeps them
        dense_at_rest["neuzip"]["compress_at_rest"] = False
        runs["neuzip"] = train_deepspeed(dense_at_rest, 20, MODEL, tokens=tokens)
        runs["host_reads"] = {str(n): host_reads(dense_at_rest, tokens, n) for n in (2, 4)}
        # Persistent parameters: gathered once after each step through the blocking all_gather path.
        persistent = copy.deepcopy(cfg)
        persistent["zero_optimization"]["stage3_param_persistence_threshold"] = 20000
        runs["persistent"] = train_deepspeed(persistent, 20, MODEL, tokens=tokens)
        # Frozen weights kept compressed at rest, then gathered lossily: the two "frozen" modes.
        at_rest = copy.deepcopy(cfg)
        at_rest["neuzip"].update(compress_at_rest=True)
        runs["frozen_dense"] = train_deepspeed(dense_config(cfg), 20, MODEL, tokens=tokens, freeze=FROZEN)
        runs["frozen_at_rest"] = train_deepspeed(
            at_rest, 20, MODEL, tokens=tokens, freeze=FROZEN, save_dir=args.ckpt, save_at=10
        )
        runs["frozen_at_rest_resumed"] = train_deepspeed(
            at_rest, 10, MODEL, tokens=tokens, freeze=FROZEN, start_step=10, load_dir=args.ckpt
        )
        runs["edit_dense"] = edit_between_steps(dense_config(cfg), tokens, freeze=FROZEN)
        runs["edit_at_rest"] = edit_between_steps(at_rest, tokens, freeze=FROZEN)
        # ZeRO-Offload: parameters and optimizer on the host (torch's AdamW there: no CPU Adam op to build).
        # nzdist holds the host partitions compressed at rest; a checkpoint is saved and resumed under offload.
        offload = copy.deepcopy(cfg)
        offload["zero_optimization"].update(offload_param={"device": "cpu"}, offload_optimizer={"device": "cpu"})
        offload["zero_force_ds_cpu_optimizer"] = False
        offload["neuzip"]["compress_at_rest"] = True
        off_ckpt = None if args.ckpt is None else args.ckpt + "_offload"
        runs["offload_dense"] = train_deepspeed(dense_config(offload), 12, MODEL, tokens=tokens, at_end=fp32_digest)
        runs["offload_neuzip"] = train_deepspeed(offload, 12, MODEL, tokens=tokens, save_dir=off_ckpt, save_at=6)
        runs["offload_resumed"] = train_deepspeed(offload, 6, MODEL, tokens=tokens, start_step=6, load_dir=off_ckpt)
        # ... and the host fp32 master + Adam moments too, each sub-group decoded only for its own update.
        off_state = copy.deepcopy(offload)
        off_state["neuzip"]["compress_optimizer_state"] = True
        state_ckpt = None if args.ckpt is None else args.ckpt + "_offload_state"
        runs["offload_state"] = train_deepspeed(
            off_state, 12, MODEL, tokens=tokens, save_dir=state_ckpt, save_at=6, at_end=fp32_digest
        )
        runs["offload_state_resumed"] = train_deepspeed(
            off_state, 6, MODEL, tokens=tokens, start_step=6, load_dir=state_ckpt
        )
        lossy = copy.deepcopy(cfg)
        lossy["neuzip"].update(codec="lossy", mantissa_bits=3, params="frozen", compress_at_rest=False)
        runs["frozen_lossy"] = train_deepspeed(lossy, 20, MODEL, tokens=tokens, freeze=FROZEN)
        runs["lossy_blocking"] = lossy_blocking_gather_is_exact(lossy, tokens)
        # fp32 training: partitions and payloads are fp32 (sign+exponent coded, 23 mantissa bits raw).
        fp32 = copy.deepcopy(cfg)
        fp32["bf16"] = {"enabled": False}
        runs["fp32_dense"] = train_deepspeed(dense_config(fp32), 20, MODEL, tokens=tokens)
        runs["fp32_neuzip"] = train_deepspeed(fp32, 20, MODEL, tokens=tokens)
        # ZeRO++ hpZ last: DeepSpeed keeps its secondary process group process-wide, so every engine created
        # after an hpZ engine in the same process uses secondary partitions too.
        hpz = copy.deepcopy(cfg)
        hpz["zero_optimization"]["zero_hpz_partition_size"] = 2
        runs["hpz_dense"] = train_deepspeed(dense_config(hpz), 20, MODEL, tokens=tokens)
        runs["hpz_neuzip"] = train_deepspeed(hpz, 20, MODEL, tokens=tokens)

    gathered = [None] * td.get_world_size()
    td.all_gather_object(gathered, runs)
    if td.get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump({"world": td.get_world_size(), "ranks": gathered}, f)
    end_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Under torchrun, 2 ranks, DS_ACCELERATOR=cpu: a tiny ZeRO-3 engine saves with NzdistCheckpointEngine, a fresh
engine (other init) loads the checkpoint; both must then hold bit-identical parameters and optimizer state and
take an identical next step. Prints OK lines for the test."""

import sys

import deepspeed
import torch
import torch.distributed as dist

from nzdist.deepspeed.checkpoint_engine import MAGIC, NzdistCheckpointEngine

from ckpt_testutil import end_worker

CONFIG = {
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 1,
    "steps_per_print": 10**9,
    "bf16": {"enabled": True},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
}


def engine_for(seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=CONFIG)
    engine.checkpoint_engine = NzdistCheckpointEngine()
    return engine


def step(engine, i):
    g = torch.Generator().manual_seed(100 * i + dist.get_rank())
    x = torch.randn(4, 32, generator=g).bfloat16()
    loss = engine(x).float().pow(2).mean()
    engine.backward(loss)
    engine.step()
    return loss.item()


def snapshot(engine):
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        params = [p.detach().clone() for p in engine.module.parameters()]
    opt = engine.optimizer
    flat = [t.detach().clone() for t in opt.fp32_partitioned_groups_flat]
    state = [
        {k: v.detach().clone() for k, v in opt.optimizer.state[t].items() if torch.is_tensor(v)}
        for t in opt.fp32_partitioned_groups_flat
    ]
    return params, flat, state


def same(a, b):
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and torch.equal(a, b)


def main():
    out = sys.argv[1]
    deepspeed.init_distributed(dist_backend="gloo")
    a = engine_for(0)
    for i in range(3):
        step(a, i)
    a.save_checkpoint(out, tag="t3")
    ref = snapshot(a)
    b = engine_for(1)
    b.load_checkpoint(out, tag="t3")
    got = snapshot(b)
    assert same(got[0], ref[0]), "parameters differ after load"
    assert same(got[1], ref[1]), "fp32 partitions differ after load"
    assert same(got[2], ref[2]), "optimizer state differs after load"
    assert step(a, 3) == step(b, 3), "next step differs"
    if dist.get_rank() == 0:
        import glob

        files = glob.glob(f"{out}/t3/*.pt")
        assert files and all(open(f, "rb").read(8) == MAGIC for f in files), files
        print(f"OK {len(files)} files in nzdist format", flush=True)


if __name__ == "__main__":
    main()
    end_worker()  # after main: its model and optimizer (which hold the process group) are gone

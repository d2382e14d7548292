"""The FSDP2 training loop, one for every experiment: shard a model the plain way (torch's ``fully_shard``, one
group per layer, then the root) or nzdist's way (``nzdist.fsdp.shard_model`` with ``TransformerLayerPolicy``),
build the matching optimizer, and train. Only the sharding call and the optimizer wrapper differ between the two
kinds, so a bit-for-bit comparison of their losses tests nzdist and nothing else.

    record, model, opt = train("nzdist", cfg, stdlib_bytes(cfg.data_bytes), torch.device("cpu"))
"""

from __future__ import annotations

import sys
import time

import torch

from .config import ExperimentConfig
from .counters import BroadcastCounter, install_wire_counter, memory_of
from .data import batch_for_step
from .dist import rank_world
from .models import Block, ModelConfig, build_model, freeze_params

KINDS = ("plain", "nzdist")  # plain torch first: the baseline every ratio divides by


def _dtype(name: str | None):
    return None if name is None else getattr(torch, name)


def shard(kind: str, model: torch.nn.Module, cfg: ExperimentConfig, layer_cls: type, mesh=None) -> None:
    """Every ``layer_cls`` module its own group, then the root, identically for both kinds."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp import fully_shard as torch_fully_shard

    kw = {} if mesh is None else {"mesh": mesh}
    if cfg.cpu_offload:
        from torch.distributed.fsdp import CPUOffloadPolicy

        # Pinned host memory only where there is a device to copy to (pinning needs CUDA).
        kw["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    if cfg.reshard_after_forward is not None:
        kw["reshard_after_forward"] = cfg.reshard_after_forward
    if cfg.mp_param_dtype is not None or cfg.mp_reduce_dtype is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(
            param_dtype=_dtype(cfg.mp_param_dtype), reduce_dtype=_dtype(cfg.mp_reduce_dtype)
        )
    if kind == "plain":
        for m in [m for m in model.modules() if isinstance(m, layer_cls)]:
            torch_fully_shard(m, **kw)
        torch_fully_shard(model, **kw)
        return
    if kind != "nzdist":
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    try:
        import nzdist
        import nzdist.fsdp as nzfsdp
    except Exception as e:  # report exactly what failed, on every rank
        raise RuntimeError(f"the nzdist run needs nzdist.fsdp, which failed to import: {type(e).__name__}: {e}") from e
    if cfg.headroom is not None:
        kw["headroom"] = cfg.headroom
    kw["mp_storage"] = cfg.mp_storage
    if cfg.frozen_codec == "lossy":
        kw["frozen_codec"] = nzdist.Lossy(
            mantissa_bits=cfg.mantissa_bits, block_size=cfg.block_size, chunk_elems=cfg.chunk_elems
        )
    nzfsdp.shard_model(
        model, nzfsdp.TransformerLayerPolicy({layer_cls}), codec=nzdist.Lossless(chunk_elems=cfg.chunk_elems), **kw
    )


def make_optimizer(kind: str, model: torch.nn.Module, cfg: ExperimentConfig):
    """AdamW over the trainable parameters (after sharding); nzdist's run wraps it in CompressedOptimizer."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if kind == "plain":
        return opt
    import nzdist.fsdp as nzfsdp

    return nzfsdp.CompressedOptimizer(
        opt, compress_state=cfg.compress_optimizer_state, max_open_bytes=cfg.max_open_bytes
    )


def train_loop(
    model, opt, steps, batch_fn, device: torch.device, *, loss_fn=None, grad_clip: float = 0.0, on_step=None
) -> tuple[list[float], list[float]]:
    """One optimizer step per element of ``steps``: ``batch_fn(step)`` gives the inputs, ``loss_fn(model,
    *inputs)`` (default ``model(*inputs)``) the loss. Returns (losses, step times in seconds)."""
    trainable = [p for p in model.parameters() if p.requires_grad] if grad_clip else None
    cuda = device.type == "cuda"
    losses, times = [], []
    for step in steps:
        inputs = tuple(t.to(device, non_blocking=True) for t in batch_fn(step))
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        loss = model(*inputs) if loss_fn is None else loss_fn(model, *inputs)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()  # also waits for the device, so the step time below is complete
        times.append(time.perf_counter() - t0)
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return losses, times


def train(
    kind: str, cfg: ExperimentConfig, tokens: torch.Tensor, device: torch.device, mesh=None, progress: bool = False
):
    """Build, shard and train the byte-level GPT ``cfg`` describes; returns (this rank's record, model, optimizer).
    The record holds losses (and their ``float.hex``), step times, resident bytes, nzdist's comm stats and the
    bytes counted at the collectives."""
    import nzdist

    rank, world = rank_world()
    model_cfg = ModelConfig.of(cfg)
    with torch.device(device):  # initialise on the device (a 1B model's CPU init is slow); same seed both runs
        model = build_model(model_cfg, cfg.seed)
    model = model.to(dtype=_dtype(cfg.dtype))
    freeze_params(model, cfg.freeze)
    shard(kind, model, cfg, Block, mesh)
    wire = install_wire_counter(model)
    opt = make_optimizer(kind, model, cfg)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    nzdist.comm_stats(reset=True)
    bar = range(cfg.steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            bar,
            desc=f"{'fsdp2' if kind == 'plain' else kind:>6}",
            unit="step",
            disable=rank != 0,
            dynamic_ncols=True,
            file=sys.stderr,
        )
    t_run = time.perf_counter()
    with BroadcastCounter() as spills:
        losses, times = train_loop(
            model,
            opt,
            bar,
            lambda step: batch_for_step(tokens, step, cfg.batch, cfg.seq_len, rank, world, cfg.seed),
            device,
            grad_clip=cfg.grad_clip,
            on_step=(lambda _, value: bar.set_postfix(loss=f"{value:.4f}")) if progress else None,
        )
    if progress:
        bar.close()
    record = {
        "losses": losses,
        "loss_hex": [v.hex() for v in losses],
        "step_times": times,
        "wall_s": time.perf_counter() - t_run,
        "memory": memory_of(model, opt),
        "comm_stats": nzdist.comm_stats(reset=True).as_dict(),
        "wire": {
            "all_gathers": wire.calls,
            "bytes": wire.bytes,
            "broadcasts": spills.calls,
            "broadcast_bytes": spills.bytes,
        },
        "peak_device_bytes": torch.cuda.max_memory_allocated() if cuda else None,
    }
    return record, model, opt

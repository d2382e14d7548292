"""The DeepSpeed ZeRO-3 training loop. A run is configured by the DeepSpeed JSON itself (DeepSpeed owns that
schema): ``"neuzip"`` in it selects nzdist's compressed all-gather, :func:`dense_config` is the same config
without it -- the baseline every comparison uses. Model, data and batches are the FSDP runs' own, so a ZeRO-3
run and an FSDP2 run of the same seed see the same weights and the same tokens.
"""

from __future__ import annotations

import copy
import time

import torch

from .data import batch_for_step, stdlib_bytes
from .dist import rank_world
from .models import ModelConfig, build_model, freeze_params


def dense_config(ds_config: dict) -> dict:
    """The same DeepSpeed config without nzdist: the baseline every comparison uses."""
    cfg = copy.deepcopy(ds_config)
    cfg.pop("neuzip", None)
    return cfg


def train_deepspeed(
    ds_config: dict,
    steps: int,
    model_cfg: ModelConfig | None = None,
    seed: int = 0,
    tokens: torch.Tensor | None = None,
    start_step: int = 0,
    load_dir: str | None = None,
    save_dir: str | None = None,
    save_at: int | None = None,
    freeze: tuple = (),
    init: str = "random",
    engine_hook=None,
    at_end=None,
    record_host: bool = False,
) -> dict:
    """Train ``steps`` steps (global steps ``start_step ..``) under ZeRO-3; ``"neuzip"`` in the config selects
    nzdist's compressed all-gather. Returns this rank's losses, step times and all-gather byte counts;
    ``at_end(engine)``, if given, runs after the last step on every rank and its result is returned as ``at_end``;
    ``record_host``: ``host_per_step``, the host parameter and optimizer bytes after each step (nzdist engines)."""
    import nzdist
    from nzdist.deepspeed import initialize

    model_cfg = ModelConfig() if model_cfg is None else model_cfg
    tokens = stdlib_bytes() if tokens is None else tokens
    model = build_model(model_cfg, seed)
    if init == "minilm":
        from .weights import load_minilm

        load_minilm(model)
    freeze_params(model, freeze)
    engine, _, _, _ = initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds_config
    )
    if engine_hook is not None:
        engine_hook(engine)
    if load_dir is not None:
        path, _ = engine.load_checkpoint(load_dir)
        if path is None:
            raise RuntimeError(f"no checkpoint found in {load_dir}")
    rank, world = rank_world()
    batch = engine.train_micro_batch_size_per_gpu()
    device = engine.device
    nzdist.comm_stats(reset=True)
    losses, times, host = [], [], []
    for step in range(start_step, start_step + steps):
        x, y = batch_for_step(tokens, step, batch, model_cfg.seq_len, rank, world, seed)
        t0 = time.perf_counter()
        loss = engine(x.to(device), y.to(device))
        engine.backward(loss)
        engine.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if record_host and hasattr(engine, "neuzip"):  # host bytes after every step (nzdist bench offload)
            report = nzdist.memory_report(engine)
            host.append({k: report[k] for k in ("host_param_bytes", "host_optim_bytes")})
        if save_dir is not None and save_at is not None and step + 1 == save_at:
            engine.save_checkpoint(save_dir, tag=f"step{save_at}")
    comm = nzdist.comm_stats(reset=True).as_dict()
    memory = nzdist.memory_report(engine).as_dict() if hasattr(engine, "neuzip") else None
    final = at_end(engine) if at_end is not None else None
    ckpt_engine = type(engine.checkpoint_engine)
    engine.destroy()
    return {
        "backend": "deepspeed",
        "neuzip": "neuzip" in ds_config,
        "losses": losses,
        "step_times": times,
        "comm": comm,
        "memory": memory,
        "at_end": final,
        "host_per_step": host,
        "checkpoint_engine": f"{ckpt_engine.__module__}.{ckpt_engine.__name__}",
    }

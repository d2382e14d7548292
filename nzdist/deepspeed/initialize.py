"""``nzdist.deepspeed.initialize``: ``deepspeed.initialize`` plus compressed ZeRO-3 all-gathers.

A drop-in: same signature, same return value (engine, optimizer, dataloader, lr_scheduler), looked up the way
accelerate looks up ``deepspeed.initialize`` (MS-AMP's ``msamp.deepspeed.initialize`` is the precedent).
Without a ``"neuzip"`` section it is exactly ``deepspeed.initialize``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Union

import torch

from .config import NeuzipConfig, NeuzipConfigError, load_ds_config, parse
from .partitions import CompressedPartitions

# deepspeed.constants.TORCH_DISTRIBUTED_DEFAULT_PORT, repeated so importing nzdist.deepspeed stays cheap;
# tests/deepspeed check the whole signature against the installed DeepSpeed.
TORCH_DISTRIBUTED_DEFAULT_PORT = 29500


def initialize(
    args: Any = None,
    model: torch.nn.Module = None,
    optimizer: Union[torch.optim.Optimizer, Callable] | None = None,
    model_parameters: torch.nn.Module | None = None,
    training_data: torch.utils.data.Dataset | None = None,
    lr_scheduler: Union[torch.optim.lr_scheduler._LRScheduler, Callable] | None = None,
    distributed_port: int = TORCH_DISTRIBUTED_DEFAULT_PORT,
    mpu: Any = None,
    dist_init_required: bool | None = None,
    collate_fn: Callable | None = None,
    config: Union[str, dict[str, Any]] | None = None,
    mesh_param: Any = None,
    config_params: Union[str, dict[str, Any]] | None = None,
):
    """``engine, optimizer, dataloader, lr_scheduler = nzdist.deepspeed.initialize(model=m, config="ds.json")``

    Reads the ``"neuzip"`` section (config as a dict or a JSON path, or ``args.deepspeed_config``), validates
    it before DeepSpeed starts, calls ``deepspeed.initialize`` with the arguments unchanged, then installs the
    compressed all-gather into the engine's ZeRO-3 parameters (``engine.neuzip`` holds their compressed
    partitions). Collective: every rank calls it, as with ``deepspeed.initialize``.
    """
    source = _config_source(args, config, config_params)
    neuzip = parse(load_ds_config(source)) if source is not None else None
    checkpoint_engine_cls = _checkpoint_engine_class(neuzip) if neuzip is not None else None

    result = _deepspeed_initialize()(
        args=args,
        model=model,
        optimizer=optimizer,
        model_parameters=model_parameters,
        training_data=training_data,
        lr_scheduler=lr_scheduler,
        distributed_port=distributed_port,
        mpu=mpu,
        dist_init_required=dist_init_required,
        collate_fn=collate_fn,
        config=config,
        mesh_param=mesh_param,
        config_params=config_params,
    )
    if neuzip is not None:
        engine = result[0]
        stage = engine.zero_optimization_stage()
        if stage != 3:
            raise NeuzipConfigError(f"neuzip needs ZeRO stage 3; the engine runs stage {stage}")
        from .hooks import install

        install(engine, CompressedPartitions(neuzip))
        if checkpoint_engine_cls is not None:
            engine.checkpoint_engine = _make_checkpoint_engine(checkpoint_engine_cls, engine, neuzip)
    return result


_original_initialize = None  # deepspeed.initialize as it was before patch_deepspeed()


def patch_deepspeed() -> None:
    """Make ``deepspeed.initialize`` this function, for callers that look it up at call time (accelerate,
    hence ``transformers.Trainer``): ``nzdist.deepspeed.patch_deepspeed()`` before ``Trainer(...)``."""
    import deepspeed

    global _original_initialize
    if deepspeed.initialize is not initialize:
        _original_initialize = deepspeed.initialize
        deepspeed.initialize = initialize


def _deepspeed_initialize():
    import deepspeed

    if deepspeed.initialize is initialize:  # patched: call the one it replaced, not ourselves
        return _original_initialize
    return deepspeed.initialize


def _config_source(args, config, config_params):
    # The same precedence deepspeed.initialize applies (it asserts that only one is given).
    if config is None and config_params is not None:
        config = config_params
    for name in ("deepspeed_config", "deepscale_config"):
        value = getattr(args, name, None)
        if value is not None and config is None:
            return value
    return config


def _checkpoint_engine_class(neuzip: NeuzipConfig):
    if not neuzip.checkpoint.compress:
        return None
    try:
        from nzdist.deepspeed.checkpoint_engine import NzdistCheckpointEngine
    except ImportError as e:
        raise NeuzipConfigError(
            f"neuzip.checkpoint.compress is true but nzdist's DeepSpeed checkpoint engine is not available ({e})"
        ) from e
    return NzdistCheckpointEngine


def _make_checkpoint_engine(cls, engine, neuzip: NeuzipConfig):
    kwargs = dict(neuzip.checkpoint.options)
    if "config_params" in inspect.signature(cls).parameters:
        kwargs["config_params"] = engine._config
    return cls(**kwargs)

"""Public entry points: ``convert`` (for any caller of torch's ``fully_shard``) and a drop-in ``fully_shard``."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from nzdist.codec import Lossless, Lossy

from .batched import seal_states
from .capacity import DEFAULT_HEADROOM
from .param import CompressedShard
from .state import SUPPORTED_DTYPES, ShardMeta

_HOOKED = "_nzdist_state_dict_hooked"
_LOAD_HOOKED = "_nzdist_load_hooked"
_CONVERTED_TO = "_nzdist_converted_to"  # set on a replaced parameter, so tied uses elsewhere find its successor
_SEAL_BATCH = 64  # shards per batched encode in seal()


def convert(
    module: nn.Module | list[nn.Module],
    *,
    codec=None,
    frozen_codec=None,
    headroom: float = DEFAULT_HEADROOM,
    on_overflow: str = "spill",
    min_numel: int = 0,
    mp_storage: str = "remainder",
):
    """Swap ``module``'s float parameters for :class:`CompressedShard` s, in place; returns ``module``.

    Call it before torch's ``fully_shard`` (directly, or through accelerate / transformers) and every FSDP2
    all-gather of those parameters carries compressed bytes::

        nzdist.fsdp.convert(model)                    # then any fully_shard(...) call
        nzdist.fsdp.convert(model, frozen_codec=nzdist.Lossy(mantissa_bits=3))   # LoRA: lossy frozen base

    ``codec`` (lossless) applies to trainable parameters, ``frozen_codec`` (default: ``codec``; may be
    :class:`nzdist.Lossy`) to parameters with ``requires_grad=False`` at the time of the call -- freeze first.
    Parameters with fewer than ``min_numel`` elements, non-float parameters, and parameters that are already
    sharded DTensors are left alone. Tied parameters stay tied. Shards are compressed when they are first
    all-gathered (or by :func:`seal`). ``headroom`` and ``on_overflow`` ("spill" or "raise") set the all-gather
    capacity policy (capacity.py). ``mp_storage``: how fp32 shards gathered as bf16 under a MixedPrecisionPolicy
    are held -- "remainder" (default: the bf16 payload, which is what travels, plus 16 raw bits; remainder.py) or
    "cast" (the fp32 payload, and the cast's payload cached next to it).
    """
    codec = codec if codec is not None else Lossless()
    if isinstance(codec, Lossy):
        raise ValueError(
            "trainable parameters need a lossless codec (a Lossy codec would re-round them at every "
            "update); pass Lossy(...) as frozen_codec for requires_grad=False parameters"
        )
    frozen_codec = frozen_codec if frozen_codec is not None else codec
    if isinstance(module, (list, tuple)):
        for m in module:
            convert(
                m,
                codec=codec,
                frozen_codec=frozen_codec,
                headroom=headroom,
                on_overflow=on_overflow,
                min_numel=min_numel,
                mp_storage=mp_storage,
            )
        return module
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        touched = False
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            replacement = getattr(p, _CONVERTED_TO, None)
            if replacement is not None:  # tied to a parameter converted earlier (maybe via another module)
                mod._parameters[pname] = replacement
                touched = True
                continue
            if isinstance(p, (CompressedShard, DTensor)) or p.dtype not in SUPPORTED_DTYPES or p.numel() < min_numel:
                touched |= isinstance(p, CompressedShard)
                continue
            meta = ShardMeta(
                codec=codec if p.requires_grad else frozen_codec,
                headroom=headroom,
                name=f"{mod_name}.{pname}" if mod_name else pname,
                trainable=p.requires_grad,
                on_overflow=on_overflow,
                mp_storage=mp_storage,
            )
            new = nn.Parameter(CompressedShard.wrap(p.data, meta), requires_grad=p.requires_grad)
            setattr(p, _CONVERTED_TO, new)
            mod._parameters[pname] = new
            touched = True
        if touched and not getattr(mod, _HOOKED, False):
            mod.register_state_dict_post_hook(_dense_state_dict)
            setattr(mod, _HOOKED, True)
    return module


def seal(module: nn.Module) -> None:
    """Compress every open shard of ``module`` now, in one batched encode (``fully_shard`` does this; ``convert``
    leaves it lazy). For parameters already all-gathered this also re-agrees, across ranks, which shards outgrew
    their capacity (batched.py): after writing to parameters outside an optimizer step (a manual ``copy_``, ...),
    call it on every rank before the next forward."""
    states = [s._state for s in compressed_shards(module)]
    # Batches of a fixed count (the same on every rank: each ends in the spill agreement): one encode's staging
    # for a whole model at once would double its memory on a GPU.
    for i in range(0, len(states), _SEAL_BATCH):
        seal_states(states[i : i + _SEAL_BATCH])


def fully_shard(
    module: nn.Module | list[nn.Module],
    *,
    mesh=None,
    codec=None,
    frozen_codec=None,
    headroom: float = DEFAULT_HEADROOM,
    on_overflow: str = "spill",
    mp_storage: str = "remainder",
    mp_policy=None,
    reshard_after_forward: bool | None = None,
    offload_policy=None,
    **torch_kwargs,
):
    """Drop-in for ``torch.distributed.fsdp.fully_shard`` whose all-gathers carry compressed shards.

    ``module`` may be one module or a list (as accelerate passes for tied embeddings). Everything else is
    torch's: ``mesh``, ``mp_policy``, ``reshard_after_forward`` (bool), ``offload_policy``, and any other keyword
    is passed through. ``codec``/``frozen_codec``/``headroom``/``on_overflow``/``mp_storage`` are :func:`convert`'s.

        model = nzdist.fsdp.fully_shard(model, mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16))
    """
    from torch.distributed.fsdp import fully_shard as torch_fully_shard  # looked up late, like accelerate does

    if reshard_after_forward is not None and not isinstance(reshard_after_forward, bool):
        raise NotImplementedError(
            f"reshard_after_forward={reshard_after_forward!r}: FSDP2 supports only True/False "
            "for parameters with all-gather extensions (nzdist's compressed shards)"
        )
    modules = list(module) if isinstance(module, (list, tuple)) else [module]
    convert(
        modules,
        codec=codec,
        frozen_codec=frozen_codec,
        headroom=headroom,
        on_overflow=on_overflow,
        mp_storage=mp_storage,
    )
    if mp_policy is not None:
        torch_kwargs["mp_policy"] = mp_policy
    if offload_policy is not None:
        torch_kwargs["offload_policy"] = offload_policy
    if reshard_after_forward is not None:  # None: torch's default (reshard, except the root after forward)
        torch_kwargs["reshard_after_forward"] = reshard_after_forward
    out = torch_fully_shard(module, mesh=mesh, **torch_kwargs)
    for m in modules:
        seal(m)
        for sub in m.modules():  # registered after FSDP's own post-load hook, so it runs after it
            if getattr(sub, _HOOKED, False) and not getattr(sub, _LOAD_HOOKED, False):
                sub.register_load_state_dict_post_hook(_seal_after_load)
                setattr(sub, _LOAD_HOOKED, True)
    return out


def _seal_after_load(mod: nn.Module, incompatible_keys) -> None:
    # FSDP's post-load hook re-pads uneven shards into a fresh (open) buffer; compress it again right away.
    seal_states([s._state for s in compressed_shards(mod._parameters.values())], agree=False)


def _dense_state_dict(mod: nn.Module, state_dict: dict, prefix: str, local_metadata) -> None:
    # State dicts hold plain tensors (sharded DTensors with dense locals under FSDP2): DCP, torch.save and
    # load_state_dict on an unconverted model all work on them unchanged.
    for name in mod._parameters:
        key = prefix + name
        value = state_dict.get(key)
        if isinstance(value, DTensor) and isinstance(value._local_tensor, CompressedShard):
            state_dict[key] = DTensor.from_local(
                _dense_copy(value._local_tensor),
                value.device_mesh,
                value.placements,
                run_check=False,
                shape=value.shape,
                stride=value.stride(),
            )
        elif isinstance(value, CompressedShard):
            state_dict[key] = _dense_copy(value)


def _dense_copy(shard: CompressedShard) -> torch.Tensor:
    return shard.dense() if shard.is_sealed else shard.dense().clone()  # a sealed shard decodes into a new tensor


def compressed_shards(modules: nn.Module | Iterable[torch.Tensor]) -> list[CompressedShard]:
    """The CompressedShards behind ``module.parameters()`` (or behind an iterable of parameters)."""
    params = modules.parameters() if isinstance(modules, nn.Module) else modules
    out = []
    for p in params:
        local = p._local_tensor if isinstance(p, DTensor) else p
        if isinstance(local, CompressedShard):
            out.append(local)
    return out

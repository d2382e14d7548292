"""Where nzdist plugs into a ZeRO-3 engine: per-parameter gather functions and the points partitions change.

DeepSpeed gives each ZeRO-3 parameter its own ``all_gather_coalesced``, ``all_gather`` and ``partition``
closures (``Init._convert_to_deepspeed_param``); the prefetching coordinator calls
``params[0].all_gather_coalesced(params)`` and blocking paths (``GatheredParameters``, persistent parameters,
16-bit saves) call ``params[0].all_gather(params)``. Re-binding those attributes is the least invasive hook
(DeepSpeed's own MiCS did the same). Every parameter gets the wrappers, because a bucket's first parameter
may be one nzdist does not compress; each wrapper splits its list and hands the rest to DeepSpeed's original.

Partitions change in three places, all collective: the optimizer writes a sub-group back
(``_reassign_or_swap_out_partitioned_parameters``: re-encode right there, once per step), checkpoint loads
(re-encode after), and ``partition(has_been_updated=True)`` (invalidate; the next gather re-encodes).
"""

from __future__ import annotations

import functools

from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus
from deepspeed.runtime.zero.utils import assert_ints_same_as_other_ranks

from .allgather import all_gather_compressed
from .partitions import CompressedPartitions, by_group, group_size

_ORIGINAL = "_nzdist_original"


class _Handles:
    """Several handles as one (DeepSpeed's MultipleAllGatherHandles, without depending on its module path)."""

    def __init__(self, handles):
        self.handles = handles

    def wait(self, handle_dependency: bool = True) -> None:
        for h in self.handles:
            h.wait(handle_dependency=handle_dependency)


def _split(params, partitions: CompressedPartitions, exact_only: bool):
    ours, rest = [], []
    for p in params:
        wanted = partitions.exact(p) if exact_only else partitions.manages(p)
        # hpZ: a parameter holding a secondary (intra-node) partition gathers from it, dense, over the fast
        # intra-node group; its primary (inter-node) gathers are the compressed ones.
        if wanted and p.ds_secondary_tensor is None and group_size(p) > 1:
            ours.append(p)
        else:
            rest.append(p)
    return ours, rest


def _bind(param, partitions: CompressedPartitions) -> None:
    original = {
        "all_gather_coalesced": param.all_gather_coalesced,
        "all_gather": param.all_gather,
        "partition": param.partition,
    }
    setattr(param, _ORIGINAL, original)

    @functools.wraps(original["all_gather_coalesced"])
    def all_gather_coalesced(params, safe_mode: bool = False, quantize: bool = False):
        params = list(params)
        if quantize or not params:  # qnW's int8 frozen partitions keep DeepSpeed's path
            return original["all_gather_coalesced"](params, safe_mode=safe_mode, quantize=quantize)
        ours, rest = _split(params, partitions, exact_only=False)
        handles = []
        if rest:
            handles.append(original["all_gather_coalesced"](rest, safe_mode=safe_mode, quantize=quantize))
        for group in by_group(ours):
            for p in group:
                if p.ds_status != ZeroParamStatus.NOT_AVAILABLE:
                    raise RuntimeError(p.ds_summary())
            if safe_mode:
                assert_ints_same_as_other_ranks([p.ds_id for p in group])
                assert_ints_same_as_other_ranks([p.ds_tensor.ds_numel for p in group])
            handles.append(all_gather_compressed(group, partitions))
        return handles[0] if len(handles) == 1 else _Handles(handles)

    @functools.wraps(original["all_gather"])
    def all_gather(param_list=None, async_op: bool = False, hierarchy: int = 0):
        params = [param] if param_list is None else list(param_list)
        # Blocking gathers feed saves and user code: lossy payloads never serve them.
        ours, rest = _split(
            [p for p in params if p.ds_status == ZeroParamStatus.NOT_AVAILABLE], partitions, exact_only=True
        )
        ours_ids = {id(p) for p in ours}
        rest = [p for p in params if id(p) not in ours_ids]
        result = original["all_gather"](rest, async_op=async_op, hierarchy=hierarchy) if rest else None
        handles = [all_gather_compressed(g, partitions) for g in by_group(ours)]
        if async_op:
            return list(result or []) + handles
        for h in handles:
            h.wait()
        return result

    @functools.wraps(original["partition"])
    def partition(param_list=None, hierarchy: int = 0, has_been_updated: bool = False, free_data: bool = True):
        params = [param] if param_list is None else list(param_list)
        if has_been_updated:
            partitions.materialize(params)  # DeepSpeed copies the new values into ds_tensor
        original["partition"](
            param_list=param_list, hierarchy=hierarchy, has_been_updated=has_been_updated, free_data=free_data
        )
        if has_been_updated:
            partitions.invalidate(params)

    param.all_gather_coalesced = all_gather_coalesced
    param.all_gather = all_gather
    param.partition = partition


def install(engine, partitions: CompressedPartitions) -> CompressedPartitions:
    """Compress ``engine``'s ZeRO-3 all-gathers. Collective: every rank calls it after ``deepspeed.initialize``."""
    params = [p for p in engine.module.parameters() if hasattr(p, "ds_id")]
    if not params:
        raise RuntimeError("nzdist.deepspeed found no ZeRO-3 parameters on the engine (is zero stage 3 active?)")
    for p in params:
        if hasattr(p, _ORIGINAL):
            raise RuntimeError(f"parameter ds_id={p.ds_id} already has nzdist's all-gather installed")
        _bind(p, partitions)
    partitions.adopt(params)
    partitions.refresh(partitions.params)
    if partitions.cfg.compress_at_rest:
        _keep_trainable_at_rest(engine.optimizer, partitions)
    _hook_optimizer(engine.optimizer, partitions)
    _hook_checkpointing(engine, partitions)
    if partitions.cfg.compress_optimizer_state:
        _keep_optimizer_state_at_rest(engine.optimizer, partitions)
    engine.neuzip = partitions
    return partitions


def _keep_trainable_at_rest(optimizer, partitions: CompressedPartitions) -> None:
    from .at_rest import FlatBufferAtRest

    reason = FlatBufferAtRest.unsupported_reason(optimizer)
    if reason is not None:
        partitions.flat_unsupported = reason
        return
    partitions.flat = FlatBufferAtRest(optimizer, partitions)
    partitions.settle()
    for name in ("_restore_from_bit16_weights", "offload_states"):  # readers of the buffer's contents
        _materialize_before(optimizer, name, partitions)


def _keep_optimizer_state_at_rest(optimizer, partitions: CompressedPartitions) -> None:
    from .optim_at_rest import HostOptimizerState

    reason = HostOptimizerState.unsupported_reason(optimizer)
    if reason is not None:  # asked for explicitly, and the config was checked: say why it cannot be done
        raise RuntimeError(f"nzdist.deepspeed: neuzip.compress_optimizer_state is not possible here: {reason}")
    partitions.optim_state = HostOptimizerState(optimizer)
    partitions.optim_state.install()


def _materialize_before(obj, name: str, partitions: CompressedPartitions) -> None:
    method = getattr(obj, name, None)
    if method is None:
        return

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        partitions.materialize(partitions.flat.params)  # dense until the next step end frees it again
        return method(*args, **kwargs)

    setattr(obj, name, wrapper)


def _hook_optimizer(optimizer, partitions: CompressedPartitions) -> None:
    reassign = getattr(optimizer, "_reassign_or_swap_out_partitioned_parameters", None)
    if reassign is None:  # no ZeRO-3 optimizer (inference): partitions never change in place
        return
    last = len(optimizer.fp16_groups) - 1

    @functools.wraps(reassign)
    def reassign_and_encode(sub_group_id):
        if partitions.flat is not None:
            partitions.flat.allocate(decode=False)  # the optimizer overwrites the whole buffer
        result = reassign(sub_group_id)
        partitions.refresh(optimizer.fp16_groups[sub_group_id])  # the one re-encode per step
        if sub_group_id == last:
            partitions.settle()
        return result

    optimizer._reassign_or_swap_out_partitioned_parameters = reassign_and_encode

    step = optimizer.step

    @functools.wraps(step)
    def checked_step(*args, **kwargs):
        partitions.check()  # decode errors of the last forward/backward, before any update
        return step(*args, **kwargs)

    optimizer.step = checked_step


def _hook_checkpointing(engine, partitions: CompressedPartitions) -> None:
    load, save = engine.load_checkpoint, engine.save_checkpoint

    @functools.wraps(load)
    def load_checkpoint(*args, **kwargs):
        partitions.materialize()  # DeepSpeed writes partitions (frozen fragments, bf16 from fp32) in place
        partitions.invalidate(partitions.params)
        result = load(*args, **kwargs)
        # Not in a `finally`: refresh is collective, and a rank whose load raised must not enter it alone.
        partitions.refresh(partitions.params)
        partitions.settle()
        return result

    @functools.wraps(save)
    def save_checkpoint(*args, **kwargs):
        restored = partitions.materialize()  # DeepSpeed saves frozen fragments from ds_tensor
        try:
            return save(*args, **kwargs)
        finally:
            partitions.release_again(restored)

    engine.load_checkpoint = load_checkpoint
    engine.save_checkpoint = save_checkpoint

"""FSDP2's all-gather extension for CompressedShard: what each rank sends, and how all ranks' payloads become
the unsharded parameter, with no host read of device memory after a parameter's first all-gather.

- ``pre_all_gather``: agree the parameter's capacity at its first all-gather (capacity.py: one all-reduce, the
  only read), then hand FSDP this rank's slot (slot.py). Evenly sharded parameters send one 1-D uint8 tensor of
  ``capacity`` bytes; FSDP asserts that an unevenly sharded parameter's inputs have the padded shard *shape*, so
  those send ``slices`` uint8 tensors of that shape.
- ``post_all_gather``: one ``decode_into`` call decodes every rank's slot where it lies in FSDP's output,
  straight into rank r's rows of the unsharded parameter. The decoder parses the slot and payload headers
  itself; shapes, dtypes, capacity and the agreed spills are host state (GatherPlan). Errors go to the
  parameter's device error words, raised at the next step boundary (check.py).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.distributed as dist

from nzdist.accounting import record_all_gather
from nzdist.codec import FormatError, decode_into

from .capacity import agree_capacity, spill_raw


def pre_all_gather(shard, mesh, outer_size, mp_policy) -> tuple[tuple[torch.Tensor, ...], tuple]:
    """This rank's all-gather inputs (its slot, as FSDP wants it shaped) and the metadata for the decode."""
    st, meta, plan = shard._state, shard._state.meta, shard._state.plan
    param_dtype = getattr(mp_policy, "param_dtype", None)
    gather_dtype = param_dtype if param_dtype is not None else shard.dtype
    world = mesh.size()
    rows = outer_size[0] if len(outer_size) else 1
    row_numel = math.prod(outer_size[1:])
    padded_rows = -(-rows // world)
    padded_numel = padded_rows * row_numel
    even = rows % world == 0
    if not plan.agreed_for(gather_dtype):
        payload = st.payload_for(gather_dtype)
        capacity = agree_capacity(
            payload_bytes=0 if payload is None else payload.nbytes,
            padded_numel=padded_numel,
            dtype=gather_dtype,
            headroom=meta.headroom,
            trainable=meta.trainable,
            ndim=len(outer_size),
            codec=meta.codec,
            group=mesh.get_group(),
            device=st.device,
            name=meta.name,
        )
        slices = 1
        if not even:  # FSDP asserts padded-shape inputs for uneven shards: travel as k uint8 slices
            slices = max(1, -(-capacity // padded_numel))
            capacity = slices * padded_numel
        group = mesh.get_group()
        plan.fix(capacity, slices, gather_dtype, group=group, world=world, rank=dist.get_rank(group), meta=meta)
    if gather_dtype == shard.dtype:
        st.seal()
    slot = st.make_slot(gather_dtype, plan.capacity)
    record_all_gather(plan.capacity, padded_numel * gather_dtype.itemsize)
    if even:
        inputs = (slot,)
    else:
        padded_shape = (padded_rows, *outer_size[1:])
        inputs = tuple(slot[j * padded_numel : (j + 1) * padded_numel].view(padded_shape) for j in range(plan.slices))
    return inputs, (gather_dtype, tuple(outer_size), world, plan.capacity, even, meta, plan)


def post_all_gather(shard, all_gather_outputs, metadata, *, out=None):
    """Decode every rank's slot into the unsharded parameter (into ``out`` on FSDP's later calls)."""
    gather_dtype, outer_size, world, capacity, even, meta, plan = metadata
    rows = outer_size[0] if len(outer_size) else 1
    row_numel = math.prod(outer_size[1:])
    padded_rows = -(-rows // world)
    padded_numel = padded_rows * row_numel
    if even:
        flat = all_gather_outputs[0].view(-1)
        slots = [flat[r * capacity : (r + 1) * capacity] for r in range(world)]
    else:
        flats = [o.view(-1) for o in all_gather_outputs]
        slots = [torch.cat([f[r * padded_numel : (r + 1) * padded_numel] for f in flats]) for r in range(world)]
    dest = out if out is not None else torch.empty(outer_size, dtype=gather_dtype, device=all_gather_outputs[0].device)
    if dest.dtype != gather_dtype:
        raise FormatError(f"FSDP asks for {dest.dtype} but {meta.name} was gathered as {gather_dtype}")
    if plan.spilled and meta.on_overflow == "spill":
        warnings.warn(
            f"nzdist.fsdp: {meta.name} outgrew its all-gather capacity on rank(s) {list(plan.spilled)}; "
            "those shards travel raw in an extra broadcast until they shrink again",
            stacklevel=2,
        )
    grain = meta.codec.chunk_elems_for(gather_dtype)
    sources, targets, ranks = [], [], []
    with torch.no_grad(), torch.autograd._unsafe_preserve_version_counter(dest):
        flat_dest = dest.view(-1)
        for r in range(world):
            start, end = min(r * padded_rows, rows), min((r + 1) * padded_rows, rows)
            target = flat_dest[start * row_numel : end * row_numel].view(end - start, *outer_size[1:])
            if r in plan.spilled:  # every rank holds the same agreement: the same broadcasts happen everywhere
                spill_raw(shard.dense, target, r, plan.group)
            elif target.numel():
                sources.append(slots[r])
                targets.append(target)
                ranks.append(r)
        errors = shard._state.plan_errors()
        decode_into(sources, targets, errors, slots=True, grains=[grain] * len(sources), error_index=ranks)
    if out is not None:
        return None
    return dest, (dest,)

"""FSDP2's all-gather extension for CompressedShard: what each rank sends, and how all ranks' payloads become
the unsharded parameter.

- ``pre_all_gather``: agree the parameter's capacity at its first all-gather (capacity.py), then hand FSDP this
  rank's slot (slot.py). Evenly sharded parameters send one 1-D uint8 tensor of ``capacity`` bytes; FSDP asserts
  that an unevenly sharded parameter's inputs have the padded shard *shape*, so those send ``slices`` uint8
  tensors of that shape.
- ``post_all_gather``: parse every rank's slot header (so every rank takes the same branch on a bad slot), then
  decode all payloads in one ``decompress_batch`` call straight into rank r's rows of the unsharded parameter.
"""

from __future__ import annotations

import math
import warnings

import torch

from nzdist.accounting import record_all_gather
from nzdist.codec import CompressedTensor, FormatError, decompress_batch

from .capacity import agree_capacity, spill_raw
from .slot import KIND_OVERFLOW, KIND_RAW, SLOT_HEADER_BYTES, CapacityError, read_slot_headers


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
            group=mesh.get_group(),
            device=st.device,
            name=meta.name,
        )
        slices = 1
        if not even:  # FSDP asserts padded-shape inputs for uneven shards: travel as k uint8 slices
            slices = max(1, -(-capacity // padded_numel))
            capacity = slices * padded_numel
        plan.fix(capacity, slices, gather_dtype)
    if gather_dtype == shard.dtype:
        st.seal()
    slot = st.make_slot(gather_dtype, plan.capacity)
    record_all_gather(plan.capacity, padded_numel * gather_dtype.itemsize)
    if even:
        inputs = (slot,)
    else:
        padded_shape = (padded_rows, *outer_size[1:])
        inputs = tuple(slot[j * padded_numel : (j + 1) * padded_numel].view(padded_shape) for j in range(plan.slices))
    return inputs, (gather_dtype, tuple(outer_size), world, plan.capacity, even, meta, mesh.get_group())


def post_all_gather(shard, all_gather_outputs, metadata, *, out=None):
    """Decode every rank's slot into the unsharded parameter (into ``out`` on FSDP's later calls)."""
    gather_dtype, outer_size, world, capacity, even, meta, group = metadata
    name = meta.name
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
    headers = read_slot_headers(slots, capacity, name=name)
    over = [(r, n) for r, (kind, n) in enumerate(headers) if kind == KIND_OVERFLOW]
    if over and meta.on_overflow == "raise":
        detail = ", ".join(f"rank {r} needs {n} bytes" for r, n in over)
        raise CapacityError(
            f"nzdist.fsdp: the compressed shard of {name or 'a parameter'} outgrew the all-gather capacity of "
            f"{capacity - SLOT_HEADER_BYTES} bytes agreed at its first all-gather ({detail}). Use a larger "
            "headroom (nzdist.fsdp.fully_shard(..., headroom=...)) or on_overflow='spill'; capacities never "
            "change during a module's life because FSDP2 fixes its buffer sizes."
        )
    if over:
        warnings.warn(
            f"nzdist.fsdp: {name} outgrew its all-gather capacity on rank(s) {[r for r, _ in over]}; "
            "those shards travel raw in an extra broadcast until they shrink again",
            stacklevel=2,
        )
    dest = out if out is not None else torch.empty(outer_size, dtype=gather_dtype, device=all_gather_outputs[0].device)
    if dest.dtype != gather_dtype:
        raise FormatError(f"FSDP asks for {dest.dtype} but {name} was gathered as {gather_dtype}")
    cts, outs = [], []
    with torch.no_grad(), torch.autograd._unsafe_preserve_version_counter(dest):
        flat_dest = dest.view(-1)
        for r, (slot, (kind, length)) in enumerate(zip(slots, headers)):
            start, end = min(r * padded_rows, rows), min((r + 1) * padded_rows, rows)
            target = flat_dest[start * row_numel : end * row_numel].view(end - start, *outer_size[1:])
            if kind == KIND_OVERFLOW:  # every rank saw the mark: the same broadcasts happen everywhere
                spill_raw(shard.dense, target, r, group)
                continue
            data = slot[SLOT_HEADER_BYTES : SLOT_HEADER_BYTES + length]
            if kind == KIND_RAW:
                if length != target.numel() * gather_dtype.itemsize:
                    raise FormatError(
                        f"rank {r}'s raw shard of {name} has {length} bytes, expected "
                        f"{target.numel() * gather_dtype.itemsize}"
                    )
                if length:
                    target.view(-1).view(torch.uint8).copy_(data)
                continue
            ct = CompressedTensor.from_bytes(data)
            if ct.shape != target.shape or ct.dtype != gather_dtype:
                raise FormatError(
                    f"rank {r}'s payload for {name} holds {tuple(ct.shape)} {ct.dtype}, expected "
                    f"{tuple(target.shape)} {gather_dtype}"
                )
            cts.append(ct)
            outs.append(target)
        _decode_many(cts, outs)
    if out is not None:
        return None
    return dest, (dest,)


def _decode_many(cts: list, outs: list) -> None:
    decompress_batch(cts, outs)  # all ranks' chunks in one threaded pass (one launch on the GPU)

"""The compressed ZeRO-3 all-gather: one uint8 all-gather per bucket, decoded into the gathered parameters.

Wire layout of one bucket (parameters in ds_id order, the order every rank agrees on): each rank sends
``sum(capacity)`` bytes, parameter ``i`` at ``offset[i]`` with ``capacity[i] = max over ranks of its payload
size`` (known from ``CompressedPartitions.refresh``). Rank ``r``'s payload for parameter ``i`` is
``recv[r * total + offset[i] : ... + sizes[i][r]]`` and decodes into elements ``[r * ps, r * ps + valid)`` of the
parameter, so padding elements never travel.
"""

from __future__ import annotations

import torch
from deepspeed import comm as dist
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

import nzdist.codec as nzcodec
from nzdist.accounting import record_all_gather, record_h2d

from .partitions import CompressedPartitions, group_of, group_size, partition_numel, rank_in_group, valid_numel


class CompressedAllGatherHandle:
    """What ``all_gather_coalesced`` returns: ``wait()`` finishes the transfer, decodes every rank's payload
    into a fresh dense buffer per parameter, points ``param.data`` at it and marks it AVAILABLE."""

    def __init__(
        self, work, params: list, recv: torch.Tensor, offsets: list, total: int, partitions: CompressedPartitions
    ):
        self._work = work
        self._params = params
        self._recv = recv
        self._offsets = offsets
        self._total = total
        self._partitions = partitions
        self._complete = False

    def wait(self, handle_dependency: bool = True) -> None:
        if self._complete:
            return
        self._work.wait()
        sources, outs, gathered, labels, grains = [], [], [], [], []
        for p, off in zip(self._params, self._offsets):
            assert p.ds_status == ZeroParamStatus.INFLIGHT, f"expected param {p.ds_summary()} to be inflight"
            ps = partition_numel(p)
            out = torch.empty(p.ds_numel, dtype=p.ds_tensor.dtype, device=self._recv.device)
            for r, size in enumerate(self._partitions.sizes(p)):
                n = valid_numel(p, r)
                if n:  # a rank whose partition is all padding sent nothing
                    sources.append(self._recv.narrow(0, r * self._total + off, size))
                    outs.append(out.narrow(0, r * ps, n))
                    labels.append(f"param ds_id={p.ds_id} from rank {r}")
                    grains.append(self._partitions.codec.chunk_elems_for(p.ds_tensor.dtype))
            gathered.append(out)
        # Every rank's payload of every parameter in one call, where it lies; shapes and dtypes are host facts,
        # the headers are checked by the decoder, errors read before the next optimizer step.
        errors = self._partitions.error_words(labels, self._recv.device)
        nzcodec.decode_into(sources, outs, errors, slots=False, grains=grains)
        for p, out in zip(self._params, gathered):
            p.data = out.view(p.ds_shape)
            p.ds_status = ZeroParamStatus.AVAILABLE
        self._recv = None
        self._complete = True


def all_gather_compressed(params: list, partitions: CompressedPartitions) -> CompressedAllGatherHandle:
    """Start the compressed all-gather of ``params`` (one partition group, status NOT_AVAILABLE, every rank
    calling with the same list). Collective; returns at once with a handle."""
    params = sorted(params, key=lambda p: p.ds_id)
    stale = [p for p in params if partitions.is_stale(p)]
    if stale:  # invalidated outside an optimizer step (e.g. GatheredParameters(modifier_rank=...))
        partitions.refresh(stale)
    group = group_of(params[0])
    rank = rank_in_group(params[0])
    world = group_size(params[0])
    caps = [max(partitions.sizes(p)) for p in params]
    offsets, total = [], 0
    for c in caps:
        offsets.append(total)
        total += c
    device = get_accelerator().current_device_name()
    recv = torch.empty(world * total, dtype=torch.uint8, device=device)
    send = recv.narrow(0, rank * total, total)
    send.zero_()  # capacity slack past a short payload is sent too; keep it deterministic
    for p, off in zip(params, offsets):
        payload = partitions.payload(p)
        if payload.device.type == "cpu" and send.device.type != "cpu":  # offload_param: what crosses PCIe
            record_h2d(payload.numel(), valid_numel(p, rank) * p.ds_tensor.element_size())
        send.narrow(0, off, payload.numel()).copy_(payload, non_blocking=True)
    for p in params:
        p.ds_status = ZeroParamStatus.INFLIGHT
    work = dist.allgather_fn(recv, send, group=group, async_op=True)
    if partitions.cfg.stats:
        dense = sum(partition_numel(p) * p.ds_tensor.element_size() for p in params)
        record_all_gather(total, dense)
    return CompressedAllGatherHandle(work, params, recv, offsets, total, partitions)

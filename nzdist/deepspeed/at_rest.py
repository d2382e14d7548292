"""Trainable bf16/fp16 partitions compressed at rest: DeepSpeed's flat low-precision buffer is freed between
optimizer steps and re-allocated just before the optimizer overwrites it.

ZeRO-3's optimizer moves every trainable partition into one flat buffer (``lp_param_buffer``; each
``param.ds_tensor`` is a view of it) and writes the whole buffer from the fp32 master copy at every step, so
between steps the only reader of its contents is the all-gather, which nzdist serves from payloads. Freeing it
after the per-step re-encode and allocating it (uninitialised: it is about to be overwritten) right before the
next write costs no decode. Anything else that reads or writes partitions first calls ``materialize``, which
decodes the payloads back into a fresh buffer; a reader nzdist does not know about sees an empty tensor and
fails loudly (a shape error), never reads freed memory -- the reason views are re-pointed at empty tensors
instead of shrinking the shared storage. Parameters in the buffer that nzdist does not compress (below
``min_numel``) get their own small dense copy while the buffer is away.

Mirrors what DeepSpeed's own ``offload_states``/``reload_states`` do for ``lp_params``.
"""

from __future__ import annotations

import torch

import nzdist.codec as nzcodec

from .partitions import CompressedPartitions, partition_numel, rank_in_group, valid_numel


class FlatBufferAtRest:
    """Owns the freeing and re-allocation of one Stage-3 optimizer's ``lp_param_buffer``."""

    @staticmethod
    def unsupported_reason(optimizer) -> str | None:
        lp = getattr(optimizer, "lp_param_buffer", None)
        if lp is None or getattr(optimizer, "offload_param", False):
            return "partitions are not in one flat device buffer (offload_param is on, or no ZeRO-3 optimizer)"
        for lo, hi in zip(optimizer.fp16_partitioned_groups_flat, optimizer.fp32_partitioned_groups_flat):
            if lo is None or lo.data_ptr() == hi.data_ptr():
                return "the low-precision partitions are the fp32 master weights (no bf16/fp16 training)"
        return None

    def __init__(self, optimizer, partitions: CompressedPartitions):
        self.optimizer = optimizer
        self.partitions = partitions
        lp = optimizer.lp_param_buffer
        self.dtype, self.device, self.numel = lp.dtype, lp.device, lp.numel()
        self.group_numels = [t.numel() for t in optimizer.fp16_partitioned_groups_flat]
        self.params = [p for group in optimizer.fp16_groups for p in group]  # the buffer's order
        self.member_ids = {id(p) for p in self.params}
        self.ranks = [rank_in_group(p) for p in self.params]  # sub-groups may differ (expert groups)
        self.released = False

    def release(self) -> None:
        """Drop the buffer; every compressed parameter must hold a valid payload (just re-encoded)."""
        if self.released:
            return
        for p in self.params:
            # Keep a private dense copy where DeepSpeed may still read it: parameters nzdist does not compress
            # (small, below min_numel) and ones frozen after initialize (Stage 3 builds their zero gradient
            # with zeros_like(ds_tensor)).
            if self.partitions.manages(p) and p.requires_grad:
                assert not self.partitions.is_stale(p), "release() needs every payload current"
                p.ds_tensor.data = torch.empty(0, dtype=self.dtype, device=self.device)
            else:
                p.ds_tensor.data = p.ds_tensor.data.clone()
        for t in self.optimizer.fp16_partitioned_groups_flat:
            t.data = torch.empty(0, dtype=self.dtype, device=self.device)
        self.optimizer.lp_param_buffer.data = torch.empty(0, dtype=self.dtype, device=self.device)
        self.released = True

    def allocate(self, decode: bool) -> None:
        """Give the buffer storage again and point every view back into it; ``decode`` fills it from payloads
        (needed unless the caller overwrites all of it, as the optimizer step does)."""
        if not self.released:
            return
        buf = torch.empty(self.numel, dtype=self.dtype, device=self.device)
        self.optimizer.lp_param_buffer.data = buf
        offset = 0
        for t, n in zip(self.optimizer.fp16_partitioned_groups_flat, self.group_numels):
            t.data = buf.narrow(0, offset, n)
            offset += n
        offset, cts, outs = 0, [], []
        for p, rank in zip(self.params, self.ranks):
            n = partition_numel(p)
            view = buf.narrow(0, offset, n)
            if p.ds_tensor.numel() == 0:  # released: its payload is the partition
                valid = valid_numel(p, rank)
                if decode and valid:
                    cts.append(self.partitions.payload_tensor(p, rank))
                    outs.append(view.narrow(0, 0, valid))
                if decode and valid < n:
                    view.narrow(0, valid, n - valid).zero_()  # padding: as DeepSpeed's zero-padded copy
            else:
                view.copy_(p.ds_tensor.data)
            p.ds_tensor.data = view
            offset += n
        if cts:
            nzcodec.decompress_batch(cts, outs)
        self.released = False

    def released_bytes(self) -> int:
        return self.numel * torch.empty(0, dtype=self.dtype).element_size() if self.released else 0

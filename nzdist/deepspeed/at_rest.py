"""Trainable bf16/fp16 partitions compressed at rest: DeepSpeed's flat low-precision buffers are freed between
optimizer steps and re-allocated just before the optimizer overwrites them -- on the device, or in host memory
under ``offload_param: {device: cpu}``, where the partitions are then held compressed in host memory.

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
    """Owns the freeing and re-allocation of one Stage-3 optimizer's low-precision partition buffers: the one
    ``lp_param_buffer`` on the device, or with ``offload_param: {device: cpu}`` the flat host buffer of each
    parameter group (``param_groups_fp16_flat_cpu_memory``, pinned by DeepSpeed where it can)."""

    @staticmethod
    def unsupported_reason(optimizer) -> str | None:
        if not hasattr(optimizer, "fp16_partitioned_groups_flat"):
            return "no ZeRO-3 optimizer"
        if getattr(optimizer, "offload_param", False):
            if not getattr(optimizer, "param_groups_fp16_flat_cpu_memory", None):
                return "offload_param without host flat buffers"
            if any(t is None for t in optimizer.fp16_partitioned_groups_flat):
                return "partitions swapped to NVMe have no host buffer to release"
        elif getattr(optimizer, "lp_param_buffer", None) is None:
            return "partitions are not in one flat device buffer"
        for lo, hi in zip(optimizer.fp16_partitioned_groups_flat, optimizer.fp32_partitioned_groups_flat):
            if lo is None or lo.data_ptr() == hi.data_ptr():
                return "the low-precision partitions are the fp32 master weights (no bf16/fp16 training)"
        return None

    def __init__(self, optimizer, partitions: CompressedPartitions):
        self.optimizer = optimizer
        self.partitions = partitions
        bases = self._bases()
        self.dtype = bases[0].dtype
        self.base_shapes = [(b.numel(), b.device, _is_pinned(b)) for b in bases]
        # Where each sub-group's flat view sits: (base index, element offset, numel), found by address.
        self.flats = []
        for t in optimizer.fp16_partitioned_groups_flat:
            es = t.element_size()
            for i, b in enumerate(bases):
                start = b.data_ptr()
                if start <= t.data_ptr() and t.data_ptr() + t.numel() * es <= start + b.numel() * es:
                    self.flats.append((i, (t.data_ptr() - start) // es, t.numel()))
                    break
            else:
                raise RuntimeError("nzdist.deepspeed: a partition group lies outside DeepSpeed's flat buffers")
        self.numel = sum(n for n, _, _ in self.base_shapes)
        self.groups = [list(group) for group in optimizer.fp16_groups]  # each laid out in order in its flat view
        self.params = [p for group in self.groups for p in group]
        self.member_ids = {id(p) for p in self.params}
        self.ranks = {id(p): rank_in_group(p) for p in self.params}  # sub-groups may differ (expert groups)
        self.released = False

    def _bases(self) -> list[torch.Tensor]:
        if getattr(self.optimizer, "offload_param", False):
            return list(self.optimizer.param_groups_fp16_flat_cpu_memory)
        return [self.optimizer.lp_param_buffer]

    def _set_bases(self, tensors: list[torch.Tensor]) -> None:
        if getattr(self.optimizer, "offload_param", False):
            for base, t in zip(self.optimizer.param_groups_fp16_flat_cpu_memory, tensors):
                base.data = t
        else:
            self.optimizer.lp_param_buffer.data = tensors[0]

    def release(self) -> None:
        """Drop the buffers; every compressed parameter must hold a valid payload (just re-encoded)."""
        if self.released:
            return
        for p in self.params:
            # Keep a private dense copy where DeepSpeed may still read it: parameters nzdist does not compress
            # (small, below min_numel) and ones frozen after initialize (Stage 3 builds their zero gradient
            # with zeros_like(ds_tensor)).
            if self.partitions.manages(p) and p.requires_grad:
                assert not self.partitions.is_stale(p), "release() needs every payload current"
                p.ds_tensor.data = torch.empty(0, dtype=self.dtype, device=p.ds_tensor.device)
            else:
                p.ds_tensor.data = p.ds_tensor.data.clone()
        for t in self.optimizer.fp16_partitioned_groups_flat:
            t.data = torch.empty(0, dtype=self.dtype, device=t.device)
        self._set_bases([torch.empty(0, dtype=self.dtype, device=device) for _, device, _ in self.base_shapes])
        self.released = True

    def allocate(self, decode: bool) -> None:
        """Give the buffers storage again and point every view back into them; ``decode`` fills them from
        payloads (needed unless the caller overwrites all of it, as the optimizer step does)."""
        if not self.released:
            return
        bases = [_empty(n, self.dtype, device, pinned) for n, device, pinned in self.base_shapes]
        self._set_bases(bases)
        cts, outs = [], []
        for t, (b, start, n), group in zip(self.optimizer.fp16_partitioned_groups_flat, self.flats, self.groups):
            flat = bases[b].narrow(0, start, n)
            t.data = flat
            offset = 0
            for p in group:
                numel = partition_numel(p)
                view = flat.narrow(0, offset, numel)
                if p.ds_tensor.numel() == 0:  # released: its payload is the partition
                    valid = valid_numel(p, self.ranks[id(p)])
                    if decode and valid:
                        cts.append(self.partitions.payload_tensor(p, self.ranks[id(p)]))
                        outs.append(view.narrow(0, 0, valid))
                    if decode and valid < numel:
                        view.narrow(0, valid, numel - valid).zero_()  # padding: as DeepSpeed's zero-padded copy
                else:
                    view.copy_(p.ds_tensor.data)
                p.ds_tensor.data = view
                offset += numel
        if cts:
            nzcodec.decompress_batch(cts, outs)
        self.released = False

    def released_bytes(self) -> int:
        return self.numel * torch.empty(0, dtype=self.dtype).element_size() if self.released else 0


def _is_pinned(t: torch.Tensor) -> bool:
    try:
        return t.device.type == "cpu" and t.is_pinned()
    except RuntimeError:  # a build without an accelerator cannot say: nothing is pinned
        return False


def _empty(n: int, dtype: torch.dtype, device: torch.device, pinned: bool) -> torch.Tensor:
    t = torch.empty(n, dtype=dtype, device=device)
    return t.pin_memory() if pinned else t  # DeepSpeed pins offloaded partitions for async host -> device copies

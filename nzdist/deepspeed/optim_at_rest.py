"""DeepSpeed's host optimizer state held compressed between optimizer steps (``offload_optimizer: {device: cpu}``
with ``"neuzip": {"compress_optimizer_state": true}``).

Under ZeRO-Offload, Stage 3 keeps per sub-group an fp32 master partition (``fp32_partitioned_groups_flat[i]``)
and the optimizer's state for it (``optimizer.state[master]``: Adam's ``exp_avg`` / ``exp_avg_sq``) in host
memory, and its ``step()`` updates one sub-group at a time between ``_prepare_sub_group(i)`` and
``_release_sub_group(i)`` -- the seam DeepSpeed itself uses to swap that state in from NVMe and out again. Here
the same seam decodes sub-group i's master and moments just before its update and re-encodes them (losslessly,
so every result is unchanged) right after, so at most one sub-group is dense at a time. The fp32 gradient
partitions stay dense: they are rewritten every backward.

Between steps the tensors keep their identity (the optimizer keys its state by the master tensor) but point at
empty storage; a reader nzdist does not know about fails loudly on the shape instead of reading stale values.
The readers DeepSpeed has (checkpoint save/load, weight restores, offload_states, the fp32 accessors of
``deepspeed.utils``) are wrapped to see dense state and to re-encode after.
"""

from __future__ import annotations

import copy
import functools

import torch

import nzdist.codec as nzcodec

from .at_rest import _empty, _is_pinned

# Stage-3 methods that read or rewrite the fp32 master or the optimizer state outside the per-sub-group loop.
READERS = (
    "state_dict",
    "load_state_dict",
    "_restore_from_bit16_weights",
    "_restore_from_fp32_weights",
    "offload_states",
    "reload_states",
    "get_lean_optimizer_state",
    "load_hp_checkpoint_state_from_checkpoint_dir_stage3",
    # deepspeed.utils' safe_get/set_full_fp32_param, ..._optimizer_state, ..._local_...: wrapped at this level,
    # not at their shared _get_fp32_opt_state_partition, because a setter writes into the view that returns.
    "get_full_hp_param",
    "set_full_hp_param",
    "get_local_fp32_param",
    "set_local_hp_param",
    "get_hp_param_device",
)


class HostOptimizerState:
    """Payloads of each sub-group's fp32 master partition and optimizer state, and the hooks that decode them
    around the sub-group's update."""

    @staticmethod
    def unsupported_reason(optimizer) -> str | None:
        if not hasattr(optimizer, "fp32_partitioned_groups_flat"):
            return "no ZeRO-3 optimizer"
        if not getattr(optimizer, "offload_optimizer", False):
            return "offload_optimizer is off: the optimizer state is on the device"
        if getattr(optimizer, "swap_optimizer", False):
            return "the optimizer state is swapped to NVMe"
        if getattr(optimizer, "use_muon", False):
            return "Muon reads every sub-group's state before the per-sub-group loop"
        for name in ("_prepare_sub_group", "_release_sub_group"):
            if not callable(getattr(optimizer, name, None)):
                return f"this DeepSpeed has no Stage3 {name}"
        if any(t.device.type != "cpu" for t in optimizer.fp32_partitioned_groups_flat):
            return "an fp32 master partition is not in host memory"
        return None

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.masters = list(optimizer.fp32_partitioned_groups_flat)
        self.held: list[list | None] = [None] * len(self.masters)  # per sub-group: [(tensor, payload, pinned)]
        self.depth = 0  # nesting of wrapped readers: only the outermost decodes and re-encodes

    def _tensors(self, i: int) -> list[torch.Tensor]:
        """Sub-group i's master and the state tensors of its shape (not ``step`` and other scalars)."""
        master = self.masters[i]
        out = [master]
        for value in self.optimizer.optimizer.state.get(master, {}).values():
            if (
                isinstance(value, torch.Tensor)
                and value.dtype in (torch.float32, torch.bfloat16, torch.float16)
                and value.device.type == "cpu"
                and value.shape == master.shape
                and all(value is not t for t in out)
            ):
                out.append(value)
        return out

    def close(self, i: int) -> None:
        """Encode sub-group i and drop its dense storage (it was just updated, or just decoded and read)."""
        if self.held[i] is not None or self.masters[i].numel() == 0:
            return
        tensors = self._tensors(i)
        batch = nzcodec.EncodeBatch(tensors, [None] * len(tensors))  # lossless
        payloads = batch.finish(batch.status.tolist())  # host tensors: their sizes are host values, no device wait
        self.held[i] = [(t, ct, _is_pinned(t)) for t, ct in zip(tensors, payloads)]
        for t in tensors:
            t.data = torch.empty(0, dtype=t.dtype)

    def open(self, i: int) -> None:
        """Give sub-group i's tensors dense storage again, decoded from their payloads."""
        held = self.held[i]
        if held is None:
            return
        outs = [_empty(ct.shape.numel(), ct.dtype, torch.device("cpu"), pinned) for _, ct, pinned in held]
        nzcodec.decompress_batch([ct for _, ct, _ in held], [o.view(ct.shape) for o, (_, ct, _) in zip(outs, held)])
        for (t, ct, _), out in zip(held, outs):
            t.data = out.view(ct.shape)
        self.held[i] = None

    def open_all(self) -> None:
        for i in range(len(self.masters)):
            self.open(i)

    def close_all(self) -> None:
        for i in range(len(self.masters)):
            self.close(i)

    def bytes(self) -> tuple[int, int]:
        """(host bytes held, dense bytes) of the masters and optimizer state: payloads where closed."""
        held = dense = 0
        for i in range(len(self.masters)):
            managed = {id(t) for t in self._tensors(i)}
            for value in self.optimizer.optimizer.state.get(self.masters[i], {}).values():
                if isinstance(value, torch.Tensor) and id(value) not in managed and value.device.type == "cpu":
                    n = value.numel() * value.element_size()  # e.g. Adam's step count: kept as it is
                    held, dense = held + n, dense + n
            if self.held[i] is None:
                n = sum(t.numel() * t.element_size() for t in self._tensors(i))
                held, dense = held + n, dense + n
            else:
                held += sum(ct.nbytes for _, ct, _ in self.held[i])
                dense += sum(ct.shape.numel() * ct.dtype.itemsize for _, ct, _ in self.held[i])
        return held, dense

    def install(self) -> None:
        """Hook the optimizer's per-sub-group seam and its readers, then encode every sub-group."""
        opt = self.optimizer
        prepare, release = opt._prepare_sub_group, opt._release_sub_group

        @functools.wraps(prepare)
        def prepare_sub_group(sub_group_id, *args, **kwargs):
            self.open(sub_group_id)
            return prepare(sub_group_id, *args, **kwargs)

        @functools.wraps(release)
        def release_sub_group(sub_group_id, *args, **kwargs):
            result = release(sub_group_id, *args, **kwargs)
            self.close(sub_group_id)
            return result

        opt._prepare_sub_group, opt._release_sub_group = prepare_sub_group, release_sub_group
        for name in READERS:
            method = getattr(opt, name, None)
            if callable(method):
                setattr(opt, name, self._dense_during(method))
        self.close_all()

    def _dense_during(self, method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            self.depth += 1
            if self.depth == 1:
                self.open_all()
            try:
                result = method(*args, **kwargs)
                if self.depth == 1:
                    result = _alias(result, {id(t) for i in range(len(self.masters)) for t in self._tensors(i)})
                return result
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.close_all()  # re-encodes what the reader may have rewritten (a load replaces the state)

        return wrapper


def _alias(obj, managed: set[int]):
    """``obj`` with every managed tensor replaced by a new tensor object on the same storage. A state dict holds
    the masters and moments themselves, and is serialised after ``state_dict()`` returns: the aliases keep the
    dense values for it while ``close`` empties the originals, without a copy."""
    if isinstance(obj, torch.Tensor):
        return obj.detach() if id(obj) in managed else obj
    if isinstance(obj, (dict, list)):
        out = copy.copy(obj)  # keeps the container's type (OrderedDict, ...)
        for k in out.keys() if isinstance(out, dict) else range(len(out)):
            out[k] = _alias(out[k], managed)
        return out
    if isinstance(obj, tuple):
        items = [_alias(v, managed) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj

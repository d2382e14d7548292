"""What a run measures besides its losses: bytes on the wire and bytes at rest.

Wire bytes are counted at the collective, the same way for the plain and the nzdist run, so their ratio compares
like with like: FSDP2's all-gather through ``FSDPModule.set_custom_all_gather``, the raw "spill" broadcasts
nzdist.fsdp sends when a shard outgrows its agreed capacity, and DeepSpeed's all-gather entry points. Resident
bytes come from one accounting (``nzdist.memory_report``) for both runs.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.distributed as dist

# torch 2.13 renamed all_gather_into_tensor (now deprecated) to all_gather_single; FSDP2 itself calls the new name.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _counting_all_gather_class():
    from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather  # the interface set_custom_all_gather takes

    class CountingAllGather(AllGather):
        """FSDP2's default all-gather, counting the bytes each rank puts on the wire. Installed the same way on
        both runs (``FSDPModule.set_custom_all_gather``), so the two byte counts are measured identically."""

        def __init__(self) -> None:
            self.calls = 0
            self.bytes = 0

        def allocate(self, size, *, dtype, device):
            return torch.empty(*size, dtype=dtype, device=device)

        def __call__(self, output_tensor, input_tensor, group, async_op=False):
            self.calls += 1
            self.bytes += input_tensor.numel() * input_tensor.element_size()
            return _all_gather(output_tensor, input_tensor, group=group, async_op=async_op)

    return CountingAllGather


def install_wire_counter(model: torch.nn.Module):
    """Count every FSDP2 all-gather of ``model`` (after it is sharded); returns the counter (.calls, .bytes)."""
    from torch.distributed.fsdp import FSDPModule

    counter = _counting_all_gather_class()()
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_custom_all_gather(counter)
    return counter


class BroadcastCounter:
    """Counts ``torch.distributed.broadcast`` bytes while active: nzdist.fsdp sends a shard that outgrew its agreed
    all-gather capacity raw by broadcast (a "spill"), which the all-gather counter cannot see. Plain FSDP2 issues
    no broadcasts while training, so both runs are measured the same way."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0
        self._saved = None

    def __enter__(self):
        self._saved = dist.broadcast

        def counting_broadcast(tensor, *args, **kwargs):
            self.calls += 1
            self.bytes += tensor.numel() * tensor.element_size()
            return self._saved(tensor, *args, **kwargs)

        dist.broadcast = counting_broadcast
        return self

    def __exit__(self, *exc) -> None:
        dist.broadcast = self._saved


class DeepSpeedSentBytes:
    """Bytes this rank hands to DeepSpeed's all-gather entry points (each call counted once). Import deepspeed
    before building one: deepspeed.comm must exist."""

    def __init__(self):
        import deepspeed.comm as dscomm
        import deepspeed.comm.comm as dscomm_impl

        self.bytes = 0
        self._patched = []
        # allgather_fn resolves all_gather_into_tensor / all_gather in comm.comm; other callers use the names
        # re-exported by deepspeed.comm. Wrapping both bindings counts every call exactly once.
        for module in {id(dscomm): dscomm, id(dscomm_impl): dscomm_impl}.values():
            for name in ("all_gather_into_tensor", "all_gather"):
                original = getattr(module, name)
                setattr(module, name, self._counting(original, name))
                self._patched.append((module, name, original))

    def _counting(self, fn, name):
        def wrapper(*args, **kwargs):
            if name == "all_gather_into_tensor":
                t = kwargs.get("input_tensor", args[1] if len(args) > 1 else None)
            else:
                t = kwargs.get("tensor", args[1] if len(args) > 1 else None)
            if t is not None:
                self.bytes += t.numel() * t.element_size()
            return fn(*args, **kwargs)

        return wrapper

    def take(self) -> int:
        b, self.bytes = self.bytes, 0
        return b


def memory_of(model, opt) -> dict:
    """Resident parameter and optimizer bytes on this rank -- one accounting for both runs."""
    import nzdist

    return nzdist.memory_report(model, opt).as_dict()


def as_dict(report) -> dict | str:
    """A report object (``as_dict()`` or a dataclass) as a plain dict, for JSON."""
    if hasattr(report, "as_dict"):
        return report.as_dict()
    if hasattr(report, "__dataclass_fields__"):
        return asdict(report)
    return str(report)

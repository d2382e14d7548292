"""memory_report: resident bytes of parameters (and optimizer state) on this rank, compressed vs dense."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from .param import CompressedShard


@dataclass
class MemoryReport:
    param_bytes: int = 0  # what this rank keeps resident for its parameter shards now
    param_dense_bytes: int = 0  # the same shards stored dense in their own dtype (what plain FSDP2 keeps)
    param_dense_bf16_bytes: int = 0  # the same shards as dense bf16
    param_numel: int = 0
    compressed_params: int = 0
    dense_params: int = 0  # parameters nzdist does not manage (left dense)
    state_bytes: int = 0  # optimizer state resident now
    state_dense_bytes: int = 0
    # The same, for what lives in host memory (CPU tensors: offloaded shards and their optimizer step's state)
    host_param_bytes: int = 0
    host_param_dense_bytes: int = 0
    host_optim_bytes: int = 0
    host_optim_dense_bytes: int = 0

    @property
    def param_ratio(self) -> float:
        return self.param_bytes / self.param_dense_bytes if self.param_dense_bytes else float("nan")

    @property
    def param_ratio_vs_bf16(self) -> float:
        return self.param_bytes / self.param_dense_bf16_bytes if self.param_dense_bf16_bytes else float("nan")

    @property
    def state_ratio(self) -> float:
        return self.state_bytes / self.state_dense_bytes if self.state_dense_bytes else float("nan")

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "param_ratio": self.param_ratio,
            "param_ratio_vs_bf16": self.param_ratio_vs_bf16,
            "state_ratio": self.state_ratio,
        }


def _local(t: torch.Tensor) -> torch.Tensor:
    return t._local_tensor if isinstance(t, DTensor) else t


def memory_report(model: nn.Module, optimizer=None) -> MemoryReport:
    """Bytes this rank holds for ``model``'s parameter shards (and ``optimizer``'s state), vs dense storage.

    >>> r = nzdist.memory_report(model, opt); print(r.param_ratio, r.state_ratio)
    """
    r = MemoryReport()
    seen: set[int] = set()
    for p in model.parameters():
        local = _local(p)
        if id(local) in seen:
            continue
        seen.add(id(local))
        n = local.numel()
        dense = n * local.element_size()
        r.param_numel += n
        r.param_dense_bytes += dense
        r.param_dense_bf16_bytes += n * 2
        if isinstance(local, CompressedShard):
            held = local.resident_bytes()
            r.compressed_params += 1
        else:
            held = dense
            r.dense_params += 1
        r.param_bytes += held
        if local.device.type == "cpu":
            r.host_param_bytes += held
            r.host_param_dense_bytes += dense
    if optimizer is not None:
        for state in optimizer.state.values():
            for value in state.values():
                if not isinstance(value, torch.Tensor):
                    continue
                local = _local(value)
                dense = local.numel() * local.element_size()
                held = local.resident_bytes() if isinstance(local, CompressedShard) else dense
                r.state_dense_bytes += dense
                r.state_bytes += held
                if local.device.type == "cpu":
                    r.host_optim_bytes += held
                    r.host_optim_dense_bytes += dense
    return r

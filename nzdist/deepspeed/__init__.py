"""DeepSpeed ZeRO-3 with compressed partitions: ``nzdist.deepspeed.initialize`` replaces ``deepspeed.initialize``.

>>> engine, optimizer, _, _ = nzdist.deepspeed.initialize(model=model, config="configs/neuzip_zero.json")

Importing this package does not import DeepSpeed; ``initialize`` does.
"""

import torch

from .config import NeuzipConfig, NeuzipConfigError, parse
from .initialize import initialize, patch_deepspeed

# DeepSpeed versions the tests in tests/deepspeed pass on (the internals hooked: Init's per-parameter
# all_gather_coalesced/all_gather/partition closures, Stage3's _reassign_or_swap_out_partitioned_parameters).
SUPPORTED_DEEPSPEED = ">=0.19,<0.20"


class MemoryReport(dict):
    """``nzdist.memory_report(engine)``: the partitions' bytes (partitions.py) and the optimizer state's, with
    ``as_dict()`` like the FSDP report. ``host_*``: what lives in host memory (``offload_param`` /
    ``offload_optimizer`` to ``cpu``, or a CPU accelerator). ``host_optim_bytes`` counts payloads where the host
    optimizer state is held compressed (``compress_optimizer_state``), else it equals ``host_optim_dense_bytes``."""

    def as_dict(self) -> dict:
        return dict(self)


def memory_report(engine) -> MemoryReport:
    """Bytes of the engine's compressed parameters (and its optimizer state) on this rank:
    ``nzdist.deepspeed.memory_report(engine).as_dict()``."""
    report = MemoryReport(engine.neuzip.memory_report())
    host = 0
    opt = getattr(engine, "optimizer", None)
    tensors = list(getattr(opt, "fp32_partitioned_groups_flat", None) or [])
    inner = getattr(opt, "optimizer", None)
    for state in getattr(inner, "state", {}).values():
        tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    seen = set()
    for t in tensors:
        if id(t) not in seen and t.device.type == "cpu":
            seen.add(id(t))
            host += t.numel() * t.element_size()
    report["host_optim_bytes"] = report["host_optim_dense_bytes"] = host
    state = getattr(engine.neuzip, "optim_state", None)
    if state is not None:  # every master and moment is on the host under offload_optimizer cpu
        report["host_optim_bytes"], report["host_optim_dense_bytes"] = state.bytes()
    return report


__all__ = [
    "initialize",
    "patch_deepspeed",
    "NeuzipConfig",
    "NeuzipConfigError",
    "parse",
    "memory_report",
    "MemoryReport",
    "SUPPORTED_DEEPSPEED",
]

"""DeepSpeed ZeRO-3 with compressed partitions: ``nzdist.deepspeed.initialize`` replaces ``deepspeed.initialize``.

>>> engine, optimizer, _, _ = nzdist.deepspeed.initialize(model=model, config="configs/neuzip_zero.json")

Importing this package does not import DeepSpeed; ``initialize`` does.
"""

from .config import NeuzipConfig, NeuzipConfigError, parse
from .initialize import initialize, patch_deepspeed

# DeepSpeed versions the tests in tests/deepspeed pass on (the internals hooked: Init's per-parameter
# all_gather_coalesced/all_gather/partition closures, Stage3's _reassign_or_swap_out_partitioned_parameters).
SUPPORTED_DEEPSPEED = ">=0.19,<0.20"


def memory_report(engine) -> dict:
    """Bytes of the engine's compressed parameters on this rank: ``nzdist.deepspeed.memory_report(engine)``."""
    return engine.neuzip.memory_report()


__all__ = [
    "initialize",
    "patch_deepspeed",
    "NeuzipConfig",
    "NeuzipConfigError",
    "parse",
    "memory_report",
    "SUPPORTED_DEEPSPEED",
]

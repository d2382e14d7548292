"""FSDP2 with compressed resident shards and compressed all-gathers.

    import nzdist.fsdp as nzfsdp
    nzfsdp.shard_model(model, policy=nzfsdp.TransformerLayerPolicy({Block}))   # or nzfsdp.fully_shard(model)
    opt = nzfsdp.CompressedOptimizer(torch.optim.AdamW(model.parameters()))
    print(nzdist.memory_report(model, opt))

Hugging Face / accelerate users: ``nzdist.fsdp.convert(model)`` before the framework calls ``fully_shard``.
See README.md in this folder for the design (payload capacity, slots) and measured numbers.
"""

from .capacity import DEFAULT_HEADROOM
from .check import check
from .fully_shard import compressed_shards, convert, fully_shard, seal
from .memory import MemoryReport, memory_report
from .optimizer import CompressedOptimizer, open_during_step
from .param import CompressedShard
from .policies import SizePolicy, TransformerLayerPolicy, shard_model
from .slot import CapacityError, ShardMismatchError
from .state import ShardMeta

__all__ = [
    "convert",
    "fully_shard",
    "seal",
    "check",
    "shard_model",
    "TransformerLayerPolicy",
    "SizePolicy",
    "CompressedOptimizer",
    "open_during_step",
    "memory_report",
    "MemoryReport",
    "CompressedShard",
    "ShardMeta",
    "CapacityError",
    "ShardMismatchError",
    "compressed_shards",
    "DEFAULT_HEADROOM",
]

"""nzdist: losslessly compressed parameter storage for distributed training.

>>> import torch, nzdist
>>> ct = nzdist.compress(torch.randn(1024, 1024).bfloat16(), codec=nzdist.Lossless())
>>> w = nzdist.decompress(ct)
"""

from .accounting import comm_stats
from .codec import (
    CompressedTensor,
    FormatError,
    Lossless,
    Lossy,
    codec_stats,
    compress,
    decompress,
    decompress_batch,
    get_num_threads,
    max_compressed_bytes,
    set_num_threads,
)

__all__ = [
    "compress",
    "decompress",
    "decompress_batch",
    "max_compressed_bytes",
    "set_num_threads",
    "get_num_threads",
    "Lossless",
    "Lossy",
    "FormatError",
    "CompressedTensor",
    "comm_stats",
    "codec_stats",
    "memory_report",
]
__version__ = "0.1.0"


def __getattr__(name):
    # Integrations load on first use, so `import nzdist` stays a codec import (no DCP, FSDP or DeepSpeed).
    if name in ("checkpoint", "fsdp", "deepspeed"):
        import importlib

        return importlib.import_module(f"nzdist.{name}")
    raise AttributeError(f"module 'nzdist' has no attribute {name!r}")


def memory_report(model_or_engine, optimizer=None):
    """Resident bytes of parameters (and optimizer state) on this rank, compressed vs dense.

    >>> print(nzdist.memory_report(model, optimizer))      # an nzdist.fsdp model
    >>> print(nzdist.memory_report(engine))                # an nzdist.deepspeed engine

    Imported lazily: ``import nzdist`` does not pull in FSDP or DeepSpeed.
    """
    if hasattr(model_or_engine, "neuzip"):  # a DeepSpeed engine set up by nzdist.deepspeed.initialize
        from .deepspeed import memory_report as deepspeed_report

        return deepspeed_report(model_or_engine)
    from .fsdp.memory import memory_report as fsdp_report

    return fsdp_report(model_or_engine, optimizer)

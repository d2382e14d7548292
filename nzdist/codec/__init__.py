"""The nzdist codec: one compressed-float format (csrc/FORMAT.md) with a multithreaded CPU codec."""

from .api import compress, decompress, decompress_batch, get_num_threads, max_compressed_bytes, set_num_threads
from .config import Lossless, Lossy
from .errors import FormatError
from .tensor import CompressedTensor

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
]

"""The nzdist codec: one compressed-float format (csrc/FORMAT.md) with a multithreaded CPU codec."""

from .api import (
    EncodeBatch,
    compress,
    decompress,
    decompress_batch,
    get_num_threads,
    max_compressed_bytes,
    set_num_threads,
)
from .config import Lossless, Lossy
from .errors import FormatError
from .jobs import decode_into
from .stats import CodecStats, codec_stats, read_back, upload
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
    "EncodeBatch",
    "decode_into",
    "codec_stats",
    "CodecStats",
    "read_back",
    "upload",
]

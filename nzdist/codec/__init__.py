"""The nzdist codec: one compressed-float format, CPU (and, where built, CUDA) encoders and decoders."""

from .api import compress, decompress
from .config import Lossless, Lossy
from .errors import FormatError
from .tensor import CompressedTensor

__all__ = ["compress", "decompress", "Lossless", "Lossy", "FormatError", "CompressedTensor"]

"""nzdist: losslessly compressed parameter storage for distributed training.

>>> import torch, nzdist
>>> ct = nzdist.compress(torch.randn(1024, 1024).bfloat16(), codec=nzdist.Lossless())
>>> w = nzdist.decompress(ct)
"""

from .accounting import comm_stats
from .codec import CompressedTensor, FormatError, Lossless, Lossy, compress, decompress

__all__ = ["comm_stats", "compress", "decompress", "Lossless", "Lossy", "FormatError", "CompressedTensor"]
__version__ = "0.1.0"

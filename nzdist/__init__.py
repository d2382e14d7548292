"""nzdist: losslessly compressed parameter storage for distributed training.

>>> import torch, nzdist
>>> ct = nzdist.compress(torch.randn(1024, 1024).bfloat16(), codec=nzdist.Lossless())
>>> w = nzdist.decompress(ct)
"""

from .codec import CompressedTensor, FormatError, Lossless, Lossy, compress, decompress

__all__ = ["compress", "decompress", "Lossless", "Lossy", "FormatError", "CompressedTensor"]
__version__ = "0.1.0"

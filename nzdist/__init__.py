"""nzdist: losslessly compressed parameter storage for distributed training.

>>> import torch, nzdist
>>> ct = nzdist.compress(torch.randn(1024, 1024).bfloat16(), codec=nzdist.Lossless())
>>> w = nzdist.decompress(ct)
"""

from .accounting import comm_stats
from .codec import (CompressedTensor, FormatError, Lossless, Lossy, compress, decompress, decompress_batch,
                    get_num_threads, max_compressed_bytes, set_num_threads)

__all__ = ["compress", "decompress", "decompress_batch", "max_compressed_bytes", "set_num_threads",
           "get_num_threads", "Lossless", "Lossy", "FormatError", "CompressedTensor", "comm_stats"]
__version__ = "0.1.0"

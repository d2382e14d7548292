"""The dtypes the format stores and their facts, read from the extension (csrc/format.h: DType, dtype_info), so
no table here can drift from the codec's."""

import torch

from .. import _C

DTYPE_CODES = {getattr(torch, info["name"]): code for code, info in _C.DTYPES.items()}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
MANTISSA_BITS = {getattr(torch, info["name"]): info["mant_bits"] for info in _C.DTYPES.values()}
# Fields per element when lossless, the most a payload of the dtype can have (the GPU's decode tables per warp).
MAX_FIELDS = {getattr(torch, info["name"]): info["max_fields"] for info in _C.DTYPES.values()}


def dtype_code(dtype: torch.dtype) -> int:
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(
            f"nzdist compresses torch.bfloat16, torch.float16 and torch.float32 tensors, not {dtype}"
        ) from None

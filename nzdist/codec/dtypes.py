"""The dtypes the format stores, and their codes in the payload header (csrc/format.h: DType)."""

import torch

DTYPE_CODES = {torch.bfloat16: 1, torch.float16: 2, torch.float32: 3}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}


def dtype_code(dtype: torch.dtype) -> int:
    try:
        return DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(
            f"nzdist compresses torch.bfloat16, torch.float16 and torch.float32 tensors, not {dtype}") from None

"""CompressedTensor: a payload in the nzdist format plus the facts its header states."""

from __future__ import annotations

import torch

from . import _provisional as _backend


class CompressedTensor:
    """A compressed float tensor. ``data`` is a 1-D uint8 tensor holding the whole payload (header included).

    >>> ct = nzdist.compress(torch.randn(4, 8).bfloat16())
    >>> ct2 = nzdist.CompressedTensor.from_bytes(ct.to_bytes())
    """

    __slots__ = ("data", "shape", "dtype")

    def __init__(self, data: torch.Tensor, shape: torch.Size, dtype: torch.dtype):
        self.data = data
        self.shape = torch.Size(shape)
        self.dtype = dtype

    @property
    def numel(self) -> int:
        return self.shape.numel()

    @property
    def nbytes(self) -> int:
        """All compressed bytes, headers included."""
        return self.data.numel()

    @property
    def bits_per_element(self) -> float:
        return 8.0 * self.nbytes / max(1, self.numel)

    def to_bytes(self) -> bytes:
        return self.data.cpu().numpy().tobytes()

    @classmethod
    def from_bytes(cls, buf) -> "CompressedTensor":
        """Parse and validate a payload (bytes, bytearray, memoryview, or a 1-D uint8 tensor, not copied)."""
        if isinstance(buf, torch.Tensor):
            if buf.dtype != torch.uint8 or buf.dim() != 1:
                raise TypeError(f"expected a 1-D uint8 tensor, got {buf.dtype} with shape {tuple(buf.shape)}")
            data = buf
        else:
            data = torch.frombuffer(bytearray(buf), dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)
        dtype, shape, *_ = _backend.parse(data.cpu() if data.is_cuda else data)
        return cls(data, shape, dtype)

    def __repr__(self) -> str:
        return (f"CompressedTensor(shape={tuple(self.shape)}, dtype={self.dtype}, nbytes={self.nbytes}, "
                f"bits_per_element={self.bits_per_element:.3f})")

"""CompressedTensor: a payload in the nzdist format (csrc/FORMAT.md) plus the facts its header states."""

from __future__ import annotations

import torch

from .. import _C
from .dtypes import CODE_DTYPES


def _as_uint8(buf) -> torch.Tensor:
    if isinstance(buf, torch.Tensor):
        if buf.dtype != torch.uint8 or buf.dim() != 1:
            raise TypeError(f"expected a 1-D torch.uint8 tensor, got {buf.dtype} of shape {tuple(buf.shape)}")
        return buf if buf.is_contiguous() else buf.contiguous()
    if isinstance(buf, (bytes, bytearray, memoryview)):
        # torch.frombuffer needs a writable buffer and rejects empty ones; one copy of a bytes object.
        return torch.frombuffer(bytearray(buf), dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)
    raise TypeError(f"expected bytes, bytearray, memoryview or a uint8 tensor, got {type(buf).__name__}")


class CompressedTensor:
    """A compressed float tensor. ``data`` is a 1-D uint8 tensor holding the whole payload, header included.

    >>> ct = nzdist.compress(torch.randn(4, 8).bfloat16())
    >>> same = nzdist.CompressedTensor.from_bytes(ct.to_bytes())
    """

    __slots__ = ("data", "shape", "dtype", "chunk_elems")

    def __init__(self, data: torch.Tensor, shape, dtype: torch.dtype, chunk_elems: int | None = None):
        self.data = data
        self.shape = torch.Size(shape)
        self.dtype = dtype
        # Elements per chunk the payload was written with (raw payloads too: the encoder's setting), the GPU
        # decoder's work grain: one warp per chunk. None: not known (the decoder then uses the default).
        self.chunk_elems = chunk_elems

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

    def header(self) -> dict:
        """The payload header's fields (dtype code, mode, kept mantissa bits, chunking, sizes)."""
        host = self.data[: min(self.nbytes, 256)].cpu()
        return _C.parse_header(host.data_ptr(), self.nbytes)

    def to_bytes(self) -> bytes:
        return self.data.cpu().numpy().tobytes()

    @classmethod
    def from_bytes(cls, buf) -> CompressedTensor:
        """Parse and validate a payload header. ``buf``: bytes-like, or a 1-D uint8 tensor (not copied).

        Trailing bytes after the payload (e.g. capacity padding) are ignored; the payload's own checksums are
        verified when it is decoded. Raises ``nzdist.FormatError`` for a malformed or truncated payload.
        """
        data = _as_uint8(buf)
        # parse_header reads at most the 192-byte header (it checks total_bytes against the length given), so a
        # GPU payload costs one small copy.
        host = data if data.device.type == "cpu" else data[: min(data.numel(), 256)].cpu()
        info = _C.parse_header(host.data_ptr(), data.numel())
        # A raw payload's header records no chunk size (0): the decoder's default grain then applies.
        return cls(data[: info["total_bytes"]], info["shape"], CODE_DTYPES[info["dtype"]], info["chunk_elems"] or None)

    def __repr__(self) -> str:
        return (
            f"CompressedTensor(shape={tuple(self.shape)}, dtype={self.dtype}, nbytes={self.nbytes}, "
            f"bits_per_element={self.bits_per_element:.3f})"
        )

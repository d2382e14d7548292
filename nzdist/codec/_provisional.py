# PROVISIONAL backend (raw bytes + tiny header) so integrations can be written against the API while the real
# C++ codec is built. Deleted once nzdist._C lands.
import struct
import zlib

import torch

from .errors import FormatError

_DT = {torch.bfloat16: 1, torch.float16: 2, torch.float32: 3}
_TD = {v: k for k, v in _DT.items()}


def encode(t: torch.Tensor, codec) -> torch.Tensor:
    raw = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    hdr = struct.pack("<4sBB6xQI", b"NZPV", _DT[t.dtype], t.dim(), t.numel(), zlib.crc32(raw))
    hdr += struct.pack(f"<{t.dim()}q", *t.shape)
    return torch.frombuffer(bytearray(hdr + raw), dtype=torch.uint8)


def parse(data: torch.Tensor):
    b = data.numpy().tobytes() if data.numel() < 4096 else data[:4096].numpy().tobytes()
    if len(b) < 24 or b[:4] != b"NZPV":
        raise FormatError("bad magic or truncated header")
    _, dt, nd, numel, crc = struct.unpack_from("<4sBB6xQI", b)
    if dt not in _TD:
        raise FormatError(f"bad dtype code {dt}")
    shape = struct.unpack_from(f"<{nd}q", b, 24)
    return _TD[dt], torch.Size(shape), 24 + 8 * nd, crc


def decode(data: torch.Tensor, out: torch.Tensor) -> None:
    dtype, shape, off, crc = parse(data)
    body = data[off:]
    esize = torch.empty(0, dtype=dtype).element_size()
    if body.numel() != shape.numel() * esize:
        raise FormatError("payload size does not match the header")
    if zlib.crc32(body.numpy().tobytes()) != crc:
        raise FormatError("checksum mismatch")
    out.view(-1).view(torch.uint8).copy_(body)

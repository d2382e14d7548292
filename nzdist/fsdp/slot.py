"""The all-gather slot: what one rank contributes to a compressed all-gather of one parameter.

FSDP2 all-gathers fixed-size inputs (sizes equal on every rank, fixed for the module's life), but entropy-coded
payloads vary with content. So every rank sends a *slot* of the same agreed ``capacity`` bytes: a 16-byte header
(magic ``NZS1``, kind, data length), the data, zero padding. Kinds: an nzdist payload, raw little-endian
elements, or an overflow mark (no data: the owner broadcasts that shard raw). The layout is the codec's
(csrc/validate.h, ``check_slot``; constants from ``nzdist._C.SLOT``): the decoders parse every rank's slot
themselves, on the device, so the all-gather hooks read nothing back. A bad slot sets the decode error word of
that rank on every rank alike, and every rank raises the same error at the next step boundary (check.py).
"""

from __future__ import annotations

import struct

import torch

from nzdist import _C
from nzdist.codec import upload

SLOT_HEADER = struct.Struct("<4sB3xQ")
SLOT_HEADER_BYTES = _C.SLOT["header_bytes"]  # 16
SLOT_MAGIC = _C.SLOT["magic"]
KIND_PAYLOAD, KIND_RAW, KIND_OVERFLOW = (_C.SLOT["kinds"][k] for k in ("payload", "raw", "overflow"))
assert SLOT_HEADER.size == SLOT_HEADER_BYTES


class CapacityError(RuntimeError):
    """A shard's payload no longer fits the all-gather capacity agreed for its parameter (raised on every rank)."""


class ShardMismatchError(RuntimeError):
    """Ranks disagree on a parameter's shard size or dtype (raised on every rank)."""


def write_slot(
    slot: torch.Tensor, kind: int, data: torch.Tensor | None, needed: int = 0, length: int | None = None
) -> None:
    """Fill ``slot`` (1-D uint8, capacity bytes) with a header and ``data`` (1-D uint8), or an overflow mark
    (``needed``: the bytes the payload would take). ``length`` without ``data``: the caller writes the data."""
    if kind == KIND_OVERFLOW:
        length = needed
    elif length is None:
        length = 0 if data is None else data.numel()
    header = torch.frombuffer(bytearray(SLOT_HEADER.pack(SLOT_MAGIC, kind, length)), dtype=torch.uint8)
    slot[:SLOT_HEADER_BYTES].copy_(upload(header, slot.device))  # 16 host bytes, queued: nothing waits
    end = SLOT_HEADER_BYTES
    if kind != KIND_OVERFLOW and data is not None and data.numel():
        end += data.numel()
        slot[SLOT_HEADER_BYTES:end].copy_(data)
    elif kind == KIND_RAW:
        end += length
    slot[end:].zero_()

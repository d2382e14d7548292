"""The all-gather slot: what one rank contributes to a compressed all-gather of one parameter.

FSDP2 all-gathers fixed-size inputs (sizes equal on every rank, fixed for the module's life), but entropy-coded
payloads vary with content. So every rank sends a *slot* of the same agreed ``capacity`` bytes::

    offset 0   4 bytes  magic b"NZS1"
    offset 4   1 byte   kind: 0 = nzdist payload, 1 = raw little-endian elements, 2 = overflow (no data)
    offset 5   3 bytes  zero
    offset 8   8 bytes  length: bytes of payload/raw data that follow (for overflow: the bytes it needed)
    offset 16  length   data, then zero padding up to capacity

Every rank parses every rank's slot after the all-gather, so a bad slot (overflow, corrupted header) is seen
by all ranks at once and they all raise the same error instead of one rank hanging.
"""

from __future__ import annotations

import struct

import torch

from nzdist.codec import FormatError

SLOT_HEADER = struct.Struct("<4sB3xQ")
SLOT_HEADER_BYTES = SLOT_HEADER.size  # 16
SLOT_MAGIC = b"NZS1"
KIND_PAYLOAD, KIND_RAW, KIND_OVERFLOW = 0, 1, 2


class CapacityError(RuntimeError):
    """A shard's payload no longer fits the all-gather capacity agreed for its parameter (raised on every rank)."""


class ShardMismatchError(RuntimeError):
    """Ranks disagree on a parameter's shard size or dtype (raised on every rank)."""


def write_slot(slot: torch.Tensor, kind: int, data: torch.Tensor | None, needed: int = 0) -> None:
    """Fill ``slot`` (1-D uint8, capacity bytes) with a header and ``data`` (1-D uint8) or an overflow mark."""
    length = needed if kind == KIND_OVERFLOW else (0 if data is None else data.numel())
    header = torch.frombuffer(bytearray(SLOT_HEADER.pack(SLOT_MAGIC, kind, length)), dtype=torch.uint8)
    slot[:SLOT_HEADER_BYTES].copy_(header)
    end = SLOT_HEADER_BYTES
    if kind != KIND_OVERFLOW and data is not None and data.numel():
        end += data.numel()
        slot[SLOT_HEADER_BYTES:end].copy_(data)
    slot[end:].zero_()


def read_slot_header(slot: torch.Tensor, capacity: int, *, rank: int, name: str) -> tuple[int, int]:
    """(kind, length) of one received slot; raises FormatError if the header is not one nzdist writes."""
    return read_slot_headers([slot], capacity, name=name, first_rank=rank)[0]


def read_slot_headers(
    slots: list[torch.Tensor], capacity: int, *, name: str, first_rank: int = 0
) -> list[tuple[int, int]]:
    """(kind, length) of every rank's slot, read with one device-to-host copy (a copy: never pin the all-gather
    buffer); raises FormatError naming the first rank whose header is not one nzdist writes."""
    blob = torch.stack([s[:SLOT_HEADER_BYTES] for s in slots]).cpu().numpy().tobytes()
    out = []
    for i in range(len(slots)):
        magic, kind, length = SLOT_HEADER.unpack_from(blob, i * SLOT_HEADER_BYTES)
        rank = first_rank + i
        if magic != SLOT_MAGIC or kind not in (KIND_PAYLOAD, KIND_RAW, KIND_OVERFLOW):
            raise FormatError(
                f"nzdist all-gather slot of rank {rank} for {name or 'a parameter'} has a corrupt "
                f"header (magic {magic!r}, kind {kind})"
            )
        if kind != KIND_OVERFLOW and SLOT_HEADER_BYTES + length > capacity:
            raise FormatError(
                f"nzdist all-gather slot of rank {rank} for {name or 'a parameter'} claims {length} "
                f"bytes, more than its capacity {capacity - SLOT_HEADER_BYTES}"
            )
        out.append((kind, length))
    return out

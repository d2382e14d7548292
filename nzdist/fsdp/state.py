"""What one compressed parameter shard holds: its config (ShardMeta) and its storage (ShardState).

A state is *open* (``dense`` present) or *sealed* (only the payload ``ct`` is resident). Sealing encodes when
the dense values changed and releases the dense buffer; the capacity-sized all-gather slot is built from the
payload on demand (``make_slot``), so resident memory carries no capacity headroom.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nzdist.codec import CompressedTensor, Lossless, compress, decompress

from .capacity import DEFAULT_HEADROOM
from .slot import KIND_OVERFLOW, KIND_PAYLOAD, KIND_RAW, SLOT_HEADER_BYTES, write_slot

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@dataclass
class ShardMeta:
    """What every tensor derived from one converted parameter shares: its codec and its all-gather capacity."""

    codec: object = Lossless()
    headroom: float = DEFAULT_HEADROOM
    name: str = ""
    trainable: bool = True  # frozen parameters are encoded once and need no room to grow
    capacity: int | None = None  # slot bytes, agreed across ranks at the first all-gather, then fixed
    slices: int = 1  # >1 only for unevenly sharded params: the slot travels as `slices` padded-shape uint8 tensors
    gather_dtype: torch.dtype | None = None
    on_overflow: str = "spill"  # "spill": the owner broadcasts an outgrown shard raw; "raise": CapacityError

    def __post_init__(self) -> None:
        if self.on_overflow not in ("spill", "raise"):
            raise ValueError(f"on_overflow must be 'spill' or 'raise', got {self.on_overflow!r}")
        if not isinstance(self.headroom, (int, float)) or not 0 <= self.headroom <= 4:
            raise ValueError(f"headroom must be a fraction in 0..4, got {self.headroom!r}")


class ShardState:
    """The storage behind one or more aliasing CompressedShard wrappers (detach/view share it).

    Resident: ``ct`` (the exact-size payload) and, under mixed precision, ``gather_ct`` (the compressed cast
    that travels, cached until the shard changes). The capacity-sized slot is built per all-gather and handed
    to FSDP's copy-in, so the resident bytes carry no capacity headroom.
    """

    __slots__ = ("dense", "ct", "gather_ct", "dirty", "owns_storage", "meta", "shape", "dtype", "device",
                 "encodes", "detached", "parent", "_identity")

    def __init__(self, dense: torch.Tensor, meta: ShardMeta, owns_storage: bool):
        self.dense: torch.Tensor | None = dense
        self.ct: CompressedTensor | None = None
        self.gather_ct: CompressedTensor | None = None
        self.dirty = True  # no payload yet
        self.owns_storage = owns_storage  # dense is a buffer nobody else reads: free it when sealing
        self.meta = meta
        self.shape, self.dtype, self.device = dense.shape, dense.dtype, dense.device
        self.encodes = 0  # resident (re-)encodings so far (frozen parameters: exactly one)
        self.detached = False  # a part-view of a *sealed* shard: a decoded copy, so writes to it would be lost
        self.parent: ShardState | None = None  # for a part-view of an open shard: writes make the parent dirty too
        self._identity: torch.Tensor | None = None

    @property
    def identity(self) -> torch.Tensor:
        """A one-byte host allocation that lives as long as this state: its address is the shard's ``data_ptr()``.

        Callers across the ecosystem tell tensors apart by storage address (accelerate remaps the optimizer's
        parameters by ``data_ptr()``; safetensors and transformers group shared storages). A wrapper subclass has
        none (address 0 for all), so every shard would look like one tensor. The payload's address would change at
        every re-encode and the dense buffer's at every seal; this one is stable and never reused while the shard
        lives, like a real tensor's.
        """
        if self._identity is None:
            self._identity = torch.empty(1, dtype=torch.uint8)
        return self._identity

    @property
    def numel(self) -> int:
        return self.shape.numel()

    # -- open / seal ---------------------------------------------------------------------------------------
    def plain(self) -> torch.Tensor:
        if self.dense is not None:
            return self.dense
        return decompress(self.ct, out=torch.empty(self.shape, dtype=self.dtype, device=self.device))

    def open(self) -> None:
        if self.dense is None:
            self.dense = self.plain()
            self.owns_storage = True
            self.dirty = False

    def mark_dirty(self) -> None:
        self.dirty = True
        self.gather_ct = None  # a compressed cast (mixed precision) is stale: rebuilt at the next all-gather
        if self.parent is not None:
            self.parent.mark_dirty()

    def seal(self) -> None:
        if self.dense is None or self.numel == 0:
            return  # empty shards (padding ranks) stay as their zero-byte dense tensor
        if self.dirty or self.ct is None:
            self.ct = compress(self.dense, codec=self.meta.codec)
            self.dirty = False
            self.encodes += 1
        dense, self.dense = self.dense, None
        storage = dense.untyped_storage()
        if self.owns_storage and storage.size() and storage.resizable():
            storage.resize_(0)  # release now, even if an FSDP bookkeeping view still refers to it

    # -- all-gather slot -----------------------------------------------------------------------------------
    def payload_for(self, dtype: torch.dtype) -> CompressedTensor | None:
        if self.numel == 0:
            return None
        if dtype == self.dtype:
            self.seal()
            return self.ct
        if self.gather_ct is None or self.dirty:  # mixed precision: the bf16 cast travels, compressed once
            self.gather_ct = compress(self.plain().to(dtype), codec=self.meta.codec)
        return self.gather_ct

    def make_slot(self, dtype: torch.dtype, capacity: int) -> torch.Tensor:
        payload = self.payload_for(dtype)
        slot = torch.empty(capacity, dtype=torch.uint8, device=self.device)
        raw_bytes = self.numel * dtype.itemsize
        if payload is None:
            write_slot(slot, KIND_RAW, None)
        elif SLOT_HEADER_BYTES + payload.nbytes <= capacity:
            write_slot(slot, KIND_PAYLOAD, payload.data.to(slot.device))
        elif SLOT_HEADER_BYTES + raw_bytes <= capacity:
            write_slot(slot, KIND_RAW, self.plain().to(dtype).contiguous().view(-1).view(torch.uint8))
        else:
            write_slot(slot, KIND_OVERFLOW, None, needed=payload.nbytes)
        return slot

    def resident_bytes(self) -> int:
        n = 0 if self.dense is None else self.dense.numel() * self.dense.element_size()
        n += self.ct.nbytes if self.ct is not None else 0
        n += self.gather_ct.nbytes if self.gather_ct is not None else 0
        return n

"""What one compressed parameter shard holds: its config (ShardMeta) and its storage (ShardState).

A state is *open* (``dense`` present) or *sealed* (only the payload ``ct`` is resident). Sealing encodes when
the dense values changed and releases the dense buffer; the capacity-sized all-gather slot is built from the
payload on demand (``make_slot``), so resident memory carries no capacity headroom.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nzdist.accounting import record_h2d
from nzdist.codec import CompressedTensor, EncodeBatch, Lossless, compress, decompress, read_back

from .capacity import DEFAULT_HEADROOM
from .check import error_words
from .remainder import Remainder, join, split
from .slot import KIND_OVERFLOW, KIND_PAYLOAD, KIND_RAW, SLOT_HEADER_BYTES, write_slot

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@dataclass(frozen=True)
class ShardMeta:
    """How one converted parameter is compressed: its codec and capacity policy. Validated here, never changed;
    every tensor derived from the parameter shares it."""

    codec: object = Lossless()
    headroom: float = DEFAULT_HEADROOM
    name: str = ""
    trainable: bool = True  # frozen parameters are encoded once and need no room to grow
    on_overflow: str = "spill"  # "spill": the owner broadcasts an outgrown shard raw; "raise": CapacityError
    # fp32 shards gathered as bf16 (MixedPrecisionPolicy): "remainder" holds them as the bf16 payload plus 16 raw
    # bits (remainder.py); "cast" keeps the fp32 payload and caches the cast's payload too.
    mp_storage: str = "remainder"

    def __post_init__(self) -> None:
        if self.on_overflow not in ("spill", "raise"):
            raise ValueError(f"on_overflow must be 'spill' or 'raise', got {self.on_overflow!r}")
        if self.mp_storage not in ("remainder", "cast"):
            raise ValueError(f"mp_storage must be 'remainder' or 'cast', got {self.mp_storage!r}")
        if not isinstance(self.headroom, (int, float)) or not 0 <= self.headroom <= 4:
            raise ValueError(f"headroom must be a fraction in 0..4, got {self.headroom!r}")


class GatherPlan:
    """What the ranks agreed for one parameter, shared by the shard and the buffers FSDP derives from it
    (re-padding after ``load_state_dict`` keeps the agreement).

    Fixed at the first all-gather (FSDP2 sizes its buffers once): the slot ``capacity`` in bytes, the number of
    padded-shape uint8 ``slices`` it travels as (>1 only for unevenly sharded parameters), the ``dtype``
    gathered, and the group it is gathered over. Re-agreed at every batched re-encode (batched.py): ``spilled``,
    the ranks whose payload outgrew the capacity and travel raw in a broadcast -- host state every rank holds, so
    the all-gather hooks branch without reading anything. ``errors``: one int32 decode error word per rank of
    the group, on the shard's device, written by the decoder and read at the next step boundary (check.py).
    """

    __slots__ = (
        "capacity",
        "slices",
        "dtype",
        "group",
        "world",
        "rank",
        "spilled",
        "errors",
        "name",
        "on_overflow",
        "__weakref__",
    )

    def __init__(self) -> None:
        self.capacity: int | None = None
        self.slices = 1
        self.dtype: torch.dtype | None = None
        self.group = None
        self.world = 1
        self.rank = 0
        self.spilled: tuple[int, ...] = ()
        self.errors: torch.Tensor | None = None
        self.name = ""
        self.on_overflow = "spill"

    def agreed_for(self, dtype: torch.dtype) -> bool:
        return self.capacity is not None and self.dtype == dtype

    def fix(self, capacity: int, slices: int, dtype: torch.dtype, *, group, world: int, rank: int, meta) -> None:
        self.capacity, self.slices, self.dtype = capacity, slices, dtype
        self.group, self.world, self.rank = group, world, rank
        self.name, self.on_overflow = meta.name, meta.on_overflow
        self.spilled = ()


class ShardState:
    """The storage behind one or more aliasing CompressedShard wrappers (detach/view share it).

    Resident: ``ct`` (the exact-size payload) and, under mixed precision, ``gather_ct`` (the compressed cast
    that travels, cached until the shard changes). The capacity-sized slot is built per all-gather and handed
    to FSDP's copy-in, so the resident bytes carry no capacity headroom.
    """

    __slots__ = (
        "dense",
        "ct",
        "gather_ct",
        "rest",
        "dirty",
        "owns_storage",
        "meta",
        "plan",
        "shape",
        "dtype",
        "device",
        "encodes",
        "detached",
        "parent",
        "pinned",
        "_identity",
    )

    def __init__(self, dense: torch.Tensor, meta: ShardMeta, owns_storage: bool, plan: GatherPlan | None = None):
        self.dense: torch.Tensor | None = dense
        self.ct: CompressedTensor | None = None
        self.gather_ct: CompressedTensor | None = None
        self.rest: Remainder | None = None  # split storage (remainder.py): gather_ct is then the only payload
        self.dirty = True  # no payload yet
        self.owns_storage = owns_storage  # dense is a buffer nobody else reads: free it when sealing
        self.meta = meta
        self.plan = plan if plan is not None else GatherPlan()
        self.shape, self.dtype, self.device = dense.shape, dense.dtype, dense.device
        self.encodes = 0  # resident (re-)encodings so far (frozen parameters: exactly one)
        self.detached = False  # a part-view of a *sealed* shard: a decoded copy, so writes to it would be lost
        self.parent: ShardState | None = None  # for a part-view of an open shard: writes make the parent dirty too
        self.pinned = False  # host payloads in page-locked memory (FSDP's CPUOffloadPolicy(pin_memory=True))
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

    # -- constructors for the states FSDP's ops derive from a shard ----------------------------------------------
    @classmethod
    def derived(cls, src: ShardState, dense: torch.Tensor) -> ShardState:
        """A fresh buffer of the same parameter (FSDP's padding ``new_zeros``, ``_to_copy``, pinning)."""
        return cls(dense, src.meta, owns_storage=True, plan=src.plan)

    @classmethod
    def part_of(cls, src: ShardState, dense: torch.Tensor) -> ShardState:
        """A view of part of ``src`` (FSDP's chunking): ``dense`` is a view of ``src``'s open buffer, whose writes
        make ``src`` dirty too, or -- for a sealed ``src`` -- a decoded copy, which must not be written to."""
        sealed = src.dense is None
        st = cls(dense, src.meta, owns_storage=src.owns_storage or sealed, plan=src.plan)
        st.detached = sealed or src.detached
        st.parent = None if sealed else src
        return st

    @classmethod
    def moved(cls, src: ShardState, device: torch.device) -> ShardState:
        """A sealed ``src`` on another device: its payloads move, nothing is decoded."""
        st = cls(torch.empty(0, dtype=src.dtype, device=device), src.meta, owns_storage=True, plan=src.plan)
        st.shape, st.dense, st.dirty = src.shape, None, False
        st.ct = None if src.ct is None else _moved(src.ct, device)
        st.gather_ct = None if src.gather_ct is None else _moved(src.gather_ct, device)
        st.rest = None if src.rest is None else src.rest.to(device)
        if src.device.type == "cpu" and torch.device(device).type != "cpu":  # offload: what crosses PCIe
            record_h2d(st.resident_bytes(), src.numel * src.dtype.itemsize)
        return st

    @classmethod
    def pinned_copy(cls, src: ShardState) -> ShardState:
        """``src`` with its payloads in page-locked host memory (FSDP pins offloaded shards): the host -> device
        copy before each all-gather then runs asynchronously, and moves compressed bytes. Nothing is decoded."""
        st = cls.moved(src, torch.device("cpu"))
        st.pinned = True
        st._pin_payloads()
        return st

    def _pin_payloads(self) -> None:
        for ct in (self.ct, self.gather_ct):
            if ct is not None and not ct.data.is_pinned():
                ct.data = ct.data.pin_memory()
        if self.rest is not None:
            self.rest = Remainder(
                *(t.pin_memory() for t in (self.rest.lo, self.rest.index, self.rest.upper)), self.rest.count
            )

    @property
    def numel(self) -> int:
        return self.shape.numel()

    # -- open / seal ---------------------------------------------------------------------------------------
    def plain(self) -> torch.Tensor:
        if self.dense is not None:
            return self.dense
        out = torch.empty(self.shape, dtype=self.dtype, device=self.device)
        if self.rest is not None:
            return join(decompress(self.gather_ct), self.rest, out)
        return decompress(self.ct, out=out)

    def splits_for(self, dtype: torch.dtype | None) -> bool:
        """Whether this shard is stored split (remainder.py) when gathered as ``dtype``."""
        return (
            dtype == torch.bfloat16
            and self.dtype == torch.float32
            and self.meta.mp_storage == "remainder"
            and isinstance(self.meta.codec, Lossless)
        )

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

    def needs_encode(self) -> bool:
        stored = self.ct is not None or self.rest is not None
        return self.dense is not None and self.numel > 0 and (self.dirty or not stored)

    def seal(self, gather: torch.dtype | None = None) -> None:
        """Encode (one encode, one size read) if the values changed, and release the dense buffer. Many shards at
        once: batched.seal_states (one encode and one read for all of them). ``gather``: the dtype the shard is
        gathered as, where the plan does not know it yet (its first all-gather)."""
        if self.dense is None or self.numel == 0:
            return  # empty shards (padding ranks) stay as their zero-byte dense tensor
        if self.needs_encode():
            if self.splits_for(gather or self.plan.dtype):
                hi, rest = split(self.dense)
                batch = EncodeBatch([hi], [self.meta.codec])
                host = read_back(torch.cat([batch.status.view(-1).to(self.device), rest.count.view(1)]))
                if host[2] <= rest.room:
                    self.install_split(batch.finish([host[:2]])[0], rest)
                else:  # more exceptions than the table holds: both payloads this time
                    self.install(compress(self.dense, codec=self.meta.codec), compress(hi, codec=self.meta.codec))
            else:
                self.install(compress(self.dense, codec=self.meta.codec))
        self.release()

    def install(self, ct: CompressedTensor, gather_ct: CompressedTensor | None = None) -> None:
        """A fresh encoding of the current dense values (and, under mixed precision, of their cast)."""
        self.ct, self.dirty = ct, False
        self.gather_ct, self.rest = gather_ct, None
        self.encodes += 1
        if self.pinned:
            self._pin_payloads()

    def install_split(self, hi_ct: CompressedTensor, rest: Remainder) -> None:
        """A fresh split encoding (remainder.py): the bf16 payload, which is also what travels, and the rest."""
        self.ct, self.dirty = None, False
        self.gather_ct, self.rest = hi_ct, rest
        self.encodes += 1
        if self.pinned:
            self._pin_payloads()

    def release(self) -> None:
        if self.dense is None or self.numel == 0:
            return
        dense, self.dense = self.dense, None
        storage = dense.untyped_storage()
        if self.owns_storage and storage.size() and storage.resizable():
            storage.resize_(0)  # release now, even if an FSDP bookkeeping view still refers to it

    # -- all-gather slot -----------------------------------------------------------------------------------
    def payload_for(self, dtype: torch.dtype) -> CompressedTensor | None:
        if self.numel == 0:
            return None
        if dtype == self.dtype:
            if self.rest is not None and self.dense is None:  # split, gathered whole: encode the fp32 values
                self.ct = compress(self.plain(), codec=self.meta.codec)
            self.seal()
            return self.ct
        if self.splits_for(dtype):
            if self.rest is None:  # first all-gather under this policy: stored split from now on
                self.open()
                self.dirty = True
            self.seal(gather=dtype)
            return self.gather_ct
        if self.gather_ct is None or self.dirty:  # mixed precision: the bf16 cast travels, compressed once
            self.gather_ct = compress(self.plain().to(dtype), codec=self.meta.codec)
        return self.gather_ct

    def make_slot(self, dtype: torch.dtype, capacity: int) -> torch.Tensor:
        """This rank's slot, decided from host state only (payload sizes, the agreed spills): no host read."""
        payload = self.payload_for(dtype)
        slot = torch.empty(capacity, dtype=torch.uint8, device=self.device)
        if payload is None:
            write_slot(slot, KIND_RAW, None)
        elif self.plan.rank in self.plan.spilled:  # agreed at the last batched re-encode: the owner broadcasts it
            write_slot(slot, KIND_OVERFLOW, None, needed=payload.nbytes)
        elif SLOT_HEADER_BYTES + payload.nbytes <= capacity:
            write_slot(slot, KIND_PAYLOAD, payload.data.to(slot.device))
        else:  # outgrew its capacity since the ranks last agreed: every rank's decoder reports the mark
            write_slot(slot, KIND_OVERFLOW, None, needed=payload.nbytes)
        return slot

    def plan_errors(self) -> torch.Tensor:
        """The parameter's decode error words (check.py registers them for the next step boundary)."""
        return error_words(self.plan, self.device)

    def resident_bytes(self) -> int:
        n = 0 if self.dense is None else self.dense.numel() * self.dense.element_size()
        n += self.ct.nbytes if self.ct is not None else 0
        n += self.gather_ct.nbytes if self.gather_ct is not None else 0
        n += self.rest.nbytes if self.rest is not None else 0
        return n


def _moved(ct: CompressedTensor, device: torch.device) -> CompressedTensor:
    # The facts are known on the host: moving a payload parses nothing (no read of the moved bytes).
    return CompressedTensor(ct.data.to(device), ct.shape, ct.dtype, ct.chunk_elems)

"""CompressedShard: a parameter (or one FSDP2 shard of it) kept compressed between uses.

The torchao pattern: :func:`nzdist.fsdp.convert` swaps each parameter for a ``CompressedShard``; torch's own
``fully_shard`` then shards it like any tensor (``split``/``new_zeros``/``narrow``/``copy_`` reach
``__torch_dispatch__``), and because the sharded local tensor defines ``fsdp_pre_all_gather`` /
``fsdp_post_all_gather`` FSDP2 all-gathers our slot (slot.py) instead of dense elements and lets us decode
all ranks' payloads straight into the unsharded parameter.

A shard is *open* (a dense tensor is present: during sharding, during an optimizer step) or *sealed* (only the
compressed payload is resident). Reads of a sealed shard decode into a temporary; in-place ops (an optimizer
update, ``load_state_dict``'s ``copy_``) decode, apply and re-encode, so a plain torch optimizer stays correct --
:class:`nzdist.fsdp.CompressedOptimizer` just does that once per step instead of once per op.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch.utils._pytree import tree_map_only

import nzdist
from nzdist.accounting import record_all_gather
from nzdist.codec import CompressedTensor, FormatError, Lossless, compress, decompress

from .capacity import DEFAULT_HEADROOM, agree_capacity
from .slot import (KIND_OVERFLOW, KIND_PAYLOAD, KIND_RAW, SLOT_HEADER_BYTES, CapacityError, read_slot_header,
                   write_slot)

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
aten = torch.ops.aten


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


class _State:
    """The storage behind one or more aliasing CompressedShard wrappers (detach/view share it).

    Resident: ``ct`` (the exact-size payload) and, under mixed precision, ``gather_ct`` (the compressed cast
    that travels, cached until the shard changes). The capacity-sized slot is built per all-gather and handed
    to FSDP's copy-in, so the resident bytes carry no capacity headroom.
    """

    __slots__ = ("dense", "ct", "gather_ct", "dirty", "owns_storage", "meta", "shape", "dtype", "device",
                 "encodes", "detached", "parent")

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
        self.parent: _State | None = None  # for a part-view of an open shard: writes make the parent dirty too

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
        if self.owns_storage and dense.untyped_storage().size():
            dense.untyped_storage().resize_(0)  # release now, even if an FSDP bookkeeping view still refers to it

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


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


# Ops that return a tensor aliasing all of their input: the result shares the input's _State.
_ALIAS_OPS = {aten.detach.default, aten.alias.default, aten.view.default, aten._unsafe_view.default,
              aten.reshape.default}
# Ops that return views of part of the input (FSDP's chunking): the results get their own open _State.
_SUBVIEW_OPS = {aten.split.Tensor, aten.split_with_sizes.default, aten.slice.Tensor, aten.narrow.default,
                aten.as_strided.default, aten.select.int, aten.chunk.default}
# Ops that make a fresh tensor of the same kind (FSDP's padding buffer, device moves, pinning).
_FACTORY_OPS = {aten.new_zeros.default, aten.new_empty.default, aten.new_full.default, aten.new_ones.default,
                aten.new_empty_strided.default}
_COPY_OPS = {aten._to_copy.default, aten._pin_memory.default}


class CompressedShard(torch.Tensor):
    """A float tensor whose resident form is an nzdist payload. Carries FSDP2's all-gather extension."""

    _state: _State

    @staticmethod
    def __new__(cls, state: _State, shape=None, strides=None):
        shape = torch.Size(state.shape if shape is None else shape)
        t = torch.Tensor._make_wrapper_subclass(cls, shape, strides=strides or _contiguous_strides(shape),
                                                dtype=state.dtype, device=state.device, requires_grad=False)
        t._state = state
        return t

    def __init__(self, state: _State, shape=None, strides=None):
        pass

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def wrap(cls, tensor: torch.Tensor, meta: ShardMeta, *, owns_storage: bool = False) -> CompressedShard:
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"nzdist compresses {', '.join(map(str, SUPPORTED_DTYPES))} parameters, not {tensor.dtype}")
        return cls(_State(tensor.detach(), meta, owns_storage), strides=tensor.stride())

    def __repr__(self) -> str:
        st = self._state
        return (f"CompressedShard(shape={tuple(self.shape)}, dtype={self.dtype}, "
                f"{'open' if st.dense is not None else 'sealed'}, resident_bytes={st.resident_bytes()})")

    # nn.Module._apply (model.to / .cuda) and FSDP's device move swap traceable subclasses with
    # torch.utils.swap_tensors, which carries _state along; `param.data = ...` would leave it stale.
    def __tensor_flatten__(self):
        return [], (self._state,)

    @staticmethod
    def __tensor_unflatten__(inner_tensors, ctx, outer_size, outer_stride):
        return CompressedShard(ctx[0], outer_size, outer_stride)

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        st = self._state
        meta = ShardMeta(codec=st.meta.codec, headroom=st.meta.headroom, name=st.meta.name,
                         trainable=st.meta.trainable, on_overflow=st.meta.on_overflow)  # a new parameter: no capacity
        new = CompressedShard(_State(self.dense().clone(), meta, owns_storage=True), self.shape)
        if self.is_sealed:
            new.seal_()
        if getattr(self, "_is_param", False):
            new = torch.nn.Parameter(new, requires_grad=self.requires_grad)
        memo[id(self)] = new
        return new

    # -- public helpers ------------------------------------------------------------------------------------
    def dense(self) -> torch.Tensor:
        """The current values as a plain tensor (a fresh decode when sealed)."""
        d = self._state.plain()
        return d if d.shape == self.shape else d.view(self.shape)

    def open_(self) -> None:
        self._state.open()

    def seal_(self) -> None:
        self._state.seal()

    @property
    def is_sealed(self) -> bool:
        return self._state.dense is None and self._state.numel > 0

    def resident_bytes(self) -> int:
        return self._state.resident_bytes()

    @property
    def encode_count(self) -> int:
        """How many times the resident payload was (re-)encoded: once per optimizer step, once for frozen."""
        return self._state.encodes

    # -- dispatch ------------------------------------------------------------------------------------------
    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _ALIAS_OPS and isinstance(args[0], CompressedShard):
            src = args[0]
            shape = func(torch.empty(src.shape, dtype=src.dtype, device="meta"), *args[1:], **kwargs).shape
            if shape.numel() == src._state.numel:
                return CompressedShard(src._state, shape)
        if func in _SUBVIEW_OPS and isinstance(args[0], CompressedShard):
            src = args[0]
            sealed = src._state.dense is None
            out = func(src.dense(), *args[1:], **kwargs)

            def part(d):
                st = _State(d, src._state.meta, owns_storage=src._state.owns_storage or sealed)
                st.detached = sealed or src._state.detached
                st.parent = None if sealed else src._state
                return CompressedShard(st, d.shape, d.stride())

            return tree_map_only(torch.Tensor, part, out)
        if func is aten._to_copy.default and isinstance(args[0], CompressedShard) and args[0].is_sealed \
                and kwargs.get("dtype", args[0].dtype) == args[0].dtype and "device" in kwargs:
            # A device move of a sealed shard (FSDP's CPU offload brings the shard over for each all-gather):
            # move the payload, not a decoded copy.
            src, device = args[0], torch.device(kwargs["device"])
            if device == src.device:
                return CompressedShard(src._state, src.shape)
            moved = _State(torch.empty(0, dtype=src.dtype, device=device), src._state.meta, owns_storage=True)
            moved.shape, moved.dense, moved.dirty = src.shape, None, False
            moved.ct = CompressedTensor.from_bytes(src._state.ct.data.to(device))
            if src._state.gather_ct is not None:
                moved.gather_ct = CompressedTensor.from_bytes(src._state.gather_ct.data.to(device))
            return CompressedShard(moved, src.shape)
        if func in _FACTORY_OPS or func in _COPY_OPS:
            src = args[0]
            plain_src = torch.empty(0, dtype=src.dtype, device=src.device) if func in _FACTORY_OPS else src.dense()
            out = func(plain_src, *args[1:], **kwargs)
            if out.dtype in SUPPORTED_DTYPES:
                return CompressedShard(_State(out, src._state.meta, owns_storage=True), out.shape, out.stride())
            return out

        mutated = _mutated_shards(func, args, kwargs)
        if any(s._state.detached for s in mutated):
            raise RuntimeError(f"{func}: in-place write to part of a sealed CompressedShard would be lost (the part is "
                               "a decoded copy); call .open_() on the shard first, or write to the whole tensor")
        reseal = []
        for s in mutated:
            if s._state.dense is None:
                s._state.open()
                reseal.append(s._state)
        plain_args, plain_kwargs = tree_map_only(CompressedShard, lambda s: s.dense(), (args, kwargs))
        out = func(*plain_args, **plain_kwargs)
        for s in mutated:
            s._state.mark_dirty()
        for st in reseal:
            st.seal()
        if mutated and isinstance(out, torch.Tensor) and any(args[0] is m for m in mutated):
            return args[0]
        return out

    # -- FSDP2 all-gather extension -----------------------------------------------------------------------
    def fsdp_pre_all_gather(self, mesh, outer_size, outer_stride, module, mp_policy):
        st, meta = self._state, self._state.meta
        param_dtype = getattr(mp_policy, "param_dtype", None)
        gather_dtype = param_dtype if param_dtype is not None else self.dtype
        world = mesh.size()
        rows = outer_size[0] if len(outer_size) else 1
        row_numel = math.prod(outer_size[1:])
        padded_rows = -(-rows // world)
        padded_numel = padded_rows * row_numel
        even = rows % world == 0
        if meta.capacity is None or meta.gather_dtype != gather_dtype:
            payload = st.payload_for(gather_dtype)
            capacity = agree_capacity(payload_bytes=0 if payload is None else payload.nbytes,
                                      padded_numel=padded_numel, dtype=gather_dtype, headroom=meta.headroom,
                                      trainable=meta.trainable,
                                      group=mesh.get_group(), device=st.device, name=meta.name)
            slices = 1
            if not even:  # FSDP asserts padded-shape inputs for uneven shards: travel as k uint8 slices
                slices = max(1, -(-capacity // padded_numel))
                capacity = slices * padded_numel
            meta.capacity, meta.slices, meta.gather_dtype = capacity, slices, gather_dtype
        if gather_dtype == self.dtype:
            st.seal()
        slot = st.make_slot(gather_dtype, meta.capacity)
        record_all_gather(meta.capacity, padded_numel * gather_dtype.itemsize)
        if even:
            inputs = (slot,)
        else:
            padded_shape = (padded_rows, *outer_size[1:])
            inputs = tuple(slot[j * padded_numel:(j + 1) * padded_numel].view(padded_shape)
                           for j in range(meta.slices))
        return inputs, (gather_dtype, tuple(outer_size), world, meta.capacity, even, meta, mesh.get_group())

    def fsdp_post_all_gather(self, all_gather_outputs, metadata, param_dtype, *, out=None):
        gather_dtype, outer_size, world, capacity, even, meta, group = metadata
        name = meta.name
        rows = outer_size[0] if len(outer_size) else 1
        row_numel = math.prod(outer_size[1:])
        padded_rows = -(-rows // world)
        padded_numel = padded_rows * row_numel
        if even:
            flat = all_gather_outputs[0].view(-1)
            slots = [flat[r * capacity:(r + 1) * capacity] for r in range(world)]
        else:
            flats = [o.view(-1) for o in all_gather_outputs]
            slots = [torch.cat([f[r * padded_numel:(r + 1) * padded_numel] for f in flats]) for r in range(world)]
        headers = [read_slot_header(s, capacity, rank=r, name=name) for r, s in enumerate(slots)]
        over = [(r, n) for r, (kind, n) in enumerate(headers) if kind == KIND_OVERFLOW]
        if over and meta.on_overflow == "raise":
            detail = ", ".join(f"rank {r} needs {n} bytes" for r, n in over)
            raise CapacityError(
                f"nzdist.fsdp: the compressed shard of {name or 'a parameter'} outgrew the all-gather capacity of "
                f"{capacity - SLOT_HEADER_BYTES} bytes agreed at its first all-gather ({detail}). Use a larger "
                "headroom (nzdist.fsdp.fully_shard(..., headroom=...)) or on_overflow='spill'; capacities never "
                "change during a module's life because FSDP2 fixes its buffer sizes.")
        if over:
            warnings.warn(f"nzdist.fsdp: {name} outgrew its all-gather capacity on rank(s) {[r for r, _ in over]}; "
                          "those shards travel raw in an extra broadcast until they shrink again", stacklevel=2)
        dest = out if out is not None else torch.empty(outer_size, dtype=gather_dtype,
                                                       device=all_gather_outputs[0].device)
        if dest.dtype != gather_dtype:
            raise FormatError(f"FSDP asks for {dest.dtype} but {name} was gathered as {gather_dtype}")
        cts, outs = [], []
        with torch.no_grad(), torch.autograd._unsafe_preserve_version_counter(dest):
            flat_dest = dest.view(-1)
            for r, (slot, (kind, length)) in enumerate(zip(slots, headers)):
                start, end = min(r * padded_rows, rows), min((r + 1) * padded_rows, rows)
                target = flat_dest[start * row_numel:end * row_numel].view(end - start, *outer_size[1:])
                if kind == KIND_OVERFLOW:  # every rank saw the mark: the same broadcasts happen everywhere
                    _spill(self, target, r, group)
                    continue
                data = slot[SLOT_HEADER_BYTES:SLOT_HEADER_BYTES + length]
                if kind == KIND_RAW:
                    if length != target.numel() * gather_dtype.itemsize:
                        raise FormatError(f"rank {r}'s raw shard of {name} has {length} bytes, expected "
                                          f"{target.numel() * gather_dtype.itemsize}")
                    if length:
                        target.view(-1).view(torch.uint8).copy_(data)
                    continue
                ct = CompressedTensor.from_bytes(data)
                if ct.shape != target.shape or ct.dtype != gather_dtype:
                    raise FormatError(f"rank {r}'s payload for {name} holds {tuple(ct.shape)} {ct.dtype}, expected "
                                      f"{tuple(target.shape)} {gather_dtype}")
                cts.append(ct)
                outs.append(target)
            _decode_many(cts, outs)
        if out is not None:
            return None
        return dest, (dest,)


def _spill(local: CompressedShard, target: torch.Tensor, owner: int, group) -> None:
    """Broadcast rank ``owner``'s shard raw into ``target`` on every rank of ``group``."""
    import torch.distributed as dist

    buf = local.dense().to(target.dtype).contiguous() if dist.get_rank(group) == owner else torch.empty_like(target)
    dist.broadcast(buf, src=dist.get_global_rank(group, owner), group=group)
    target.copy_(buf)


def _decode_many(cts: list, outs: list) -> None:
    batch = getattr(nzdist, "decompress_batch", None)
    if batch is not None and len(cts) > 1:
        batch(cts, outs)
        return
    for ct, o in zip(cts, outs):
        decompress(ct, out=o)


def _mutated_shards(func, args, kwargs) -> list:
    """The CompressedShards an op writes to, read from its schema's alias annotations."""
    found = []
    schema = func._schema
    for i, arg in enumerate(schema.arguments):
        if arg.alias_info is None or not arg.alias_info.is_write:
            continue
        value = args[i] if i < len(args) else kwargs.get(arg.name)
        for v in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(v, CompressedShard) and not any(v is f for f in found):
                found.append(v)
    return found

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

import torch
from torch.utils._pytree import tree_map_only

from .allgather import post_all_gather, pre_all_gather
from .state import SUPPORTED_DTYPES, ShardMeta, ShardState

aten = torch.ops.aten


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= max(s, 1)
    return tuple(reversed(strides))


# Ops that return a tensor aliasing all of their input: the result shares the input's ShardState.
_ALIAS_OPS = {
    aten.detach.default,
    aten.alias.default,
    aten.view.default,
    aten._unsafe_view.default,
    aten.reshape.default,
}
# Ops that return views of part of the input (FSDP's chunking): the results get their own open ShardState.
_SUBVIEW_OPS = {
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.slice.Tensor,
    aten.narrow.default,
    aten.as_strided.default,
    aten.select.int,
    aten.chunk.default,
}
# Ops that make a fresh tensor of the same kind (FSDP's padding buffer, device moves, pinning).
_FACTORY_OPS = {
    aten.new_zeros.default,
    aten.new_empty.default,
    aten.new_full.default,
    aten.new_ones.default,
    aten.new_empty_strided.default,
}
_COPY_OPS = {aten._to_copy.default, aten._pin_memory.default}


class CompressedShard(torch.Tensor):
    """A float tensor whose resident form is an nzdist payload. Carries FSDP2's all-gather extension."""

    _state: ShardState

    @staticmethod
    def __new__(cls, state: ShardState, shape=None, strides=None):
        shape = torch.Size(state.shape if shape is None else shape)
        t = torch.Tensor._make_wrapper_subclass(
            cls,
            shape,
            strides=strides or _contiguous_strides(shape),
            dtype=state.dtype,
            device=state.device,
            requires_grad=False,
        )
        t._state = state
        return t

    def __init__(self, state: ShardState, shape=None, strides=None):
        pass

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def wrap(cls, tensor: torch.Tensor, meta: ShardMeta, *, owns_storage: bool = False) -> CompressedShard:
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"nzdist compresses {', '.join(map(str, SUPPORTED_DTYPES))} parameters, not {tensor.dtype}")
        return cls(ShardState(tensor.detach(), meta, owns_storage), strides=tensor.stride())

    def __repr__(self) -> str:
        st = self._state
        return (
            f"CompressedShard(shape={tuple(self.shape)}, dtype={self.dtype}, "
            f"{'open' if st.dense is not None else 'sealed'}, resident_bytes={st.resident_bytes()})"
        )

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
        new = _rebuild(
            self.dense().clone(),
            self._state.meta,
            self.is_sealed,
            getattr(self, "_is_param", False),
            self.requires_grad,
        )
        memo[id(self)] = new
        return new

    def __reduce_ex__(self, protocol):
        # torch.save / pickle: the values and the config, rebuilt as a new shard (torch's own path for wrapper
        # subclasses keys on data_ptr() == 0, which a shard no longer reports).
        return (
            _rebuild,
            (
                self.dense().detach().clone(),
                self._state.meta,
                self.is_sealed,
                getattr(self, "_is_param", False),
                self.requires_grad,
            ),
        )

    # -- identity --------------------------------------------------------------------------------------------
    # A wrapper subclass has no storage: data_ptr() would be 0 for every shard, and accelerate (which remaps the
    # optimizer's parameters by data_ptr()), safetensors and transformers (which group tensors by storage) would
    # take all shards for one tensor. A shard reports a stable address of its own instead (ShardState.identity):
    # aliases (detach, view, the Parameter) share it, distinct shards never do. It is an identity, not the values
    # (always a host byte, whatever the shard's device): nothing may read through it, and the codec reads and
    # writes tensor subclasses through dispatch, never through their address.
    def data_ptr(self) -> int:
        return self._state.identity.data_ptr()

    def untyped_storage(self) -> torch.UntypedStorage:
        return self._state.identity.untyped_storage()

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
            out = func(src.dense(), *args[1:], **kwargs)

            def part(d):
                return CompressedShard(ShardState.part_of(src._state, d), d.shape, d.stride())

            return tree_map_only(torch.Tensor, part, out)
        if (
            func is aten._to_copy.default
            and isinstance(args[0], CompressedShard)
            and args[0].is_sealed
            and kwargs.get("dtype", args[0].dtype) == args[0].dtype
            and "device" in kwargs
        ):
            # A device move of a sealed shard (FSDP's CPU offload brings the shard over for each all-gather):
            # move the payload, not a decoded copy.
            src, device = args[0], torch.device(kwargs["device"])
            if device == src.device:
                return CompressedShard(src._state, src.shape)
            return CompressedShard(ShardState.moved(src._state, device), src.shape)
        if func is aten.is_pinned.default and isinstance(args[0], CompressedShard):
            st = args[0]._state
            return st.pinned or (st.dense is not None and st.dense.is_pinned())
        if func is aten._pin_memory.default and isinstance(args[0], CompressedShard) and args[0].is_sealed:
            # FSDP pins offloaded shards: pin the payloads, decode nothing
            return CompressedShard(ShardState.pinned_copy(args[0]._state), args[0].shape)
        if func in _FACTORY_OPS or func in _COPY_OPS:
            src = args[0]
            plain_src = torch.empty(0, dtype=src.dtype, device=src.device) if func in _FACTORY_OPS else src.dense()
            out = func(plain_src, *args[1:], **kwargs)
            if out.dtype in SUPPORTED_DTYPES:
                st = ShardState.derived(src._state, out)
                st.pinned = func is aten._pin_memory.default  # an open shard pinned: its payloads will be too
                return CompressedShard(st, out.shape, out.stride())
            return out

        mutated = _mutated_shards(func, args, kwargs)
        if any(s._state.detached for s in mutated):
            raise RuntimeError(
                f"{func}: in-place write to part of a sealed CompressedShard would be lost (the part is "
                "a decoded copy); call .open_() on the shard first, or write to the whole tensor"
            )
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
        return pre_all_gather(self, mesh, outer_size, mp_policy)

    def fsdp_post_all_gather(self, all_gather_outputs, metadata, param_dtype, *, out=None):
        return post_all_gather(self, all_gather_outputs, metadata, out=out)


def _rebuild(dense: torch.Tensor, meta: ShardMeta, sealed: bool, is_param: bool, requires_grad: bool):
    """A new shard holding ``dense``'s values with ``meta``'s codec and policy (a new parameter: nothing agreed)."""
    new = CompressedShard(ShardState(dense, meta, owns_storage=True), dense.shape)
    if sealed:
        new.seal_()
    if is_param:
        return torch.nn.Parameter(new, requires_grad=requires_grad)
    return new.requires_grad_(requires_grad) if requires_grad else new


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

"""CompressedOptimizer: run any torch optimizer over compressed shards, one bounded batch at a time.

A plain optimizer already works on CompressedShards (every in-place op decodes, applies and re-encodes), but
AdamW touches a parameter two or three times per step. This wrapper opens (decodes) the shards of a batch of
parameters, runs the inner optimizer's ``step`` on just that batch (by narrowing each param group's ``params``
for the call), and seals (re-encodes) them: one decode and one encode per shard per step, and at most
``max_open_bytes`` of dense parameters (plus their state) alive at once.

With ``compress_state=True`` the optimizer state tensors (Adam's moments, fp32 master copies of custom
optimizers) are kept losslessly compressed between steps too; ``state_dict()`` always returns dense tensors.
Per-parameter optimizers only (Adam/AdamW/SGD/...): an optimizer that needs all parameters in one call
(LBFGS, a global-norm step) must use ``max_open_bytes=0`` (one batch).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch.distributed.tensor import DTensor

from nzdist.codec import Lossless, Lossy

from .batched import open_states, seal_states
from .check import check
from .param import CompressedShard
from .state import SUPPORTED_DTYPES, ShardMeta


def _local(t):
    return t._local_tensor if isinstance(t, DTensor) else t


def _rewrap(value: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    if isinstance(value, DTensor):
        return DTensor.from_local(
            local, value.device_mesh, value.placements, run_check=False, shape=value.shape, stride=value.stride()
        )
    return local


def open_during_step(optimizer: torch.optim.Optimizer) -> tuple:
    """Step hooks for an optimizer you cannot wrap (e.g. one a framework built): raise any decode error of the
    last forward/backward, decode every shard that has a gradient before ``step``, and re-encode them all after in
    one batched encode (batched.py) -- instead of one encode per in-place op. No memory bound and no state
    compression (use :class:`CompressedOptimizer` for those). Returns the hook handles.

        handles = nzdist.fsdp.open_during_step(trainer.optimizer)
    """
    opened: list[CompressedShard] = []
    decoded: list = []

    def pre(opt, args, kwargs):
        check()
        for group in opt.param_groups:
            for p in group["params"]:
                local = _local(p)
                if p.grad is not None and isinstance(local, CompressedShard):
                    opened.append(local)
        decoded.append(open_states([s._state for s in opened]))

    def post(opt, args, kwargs):
        states = [s._state for s in opened]
        opened.clear()
        seal_states(states, opened=decoded.pop() if decoded else None)

    return optimizer.register_step_pre_hook(pre), optimizer.register_step_post_hook(post)


class CompressedOptimizer(torch.optim.Optimizer):
    """``opt = CompressedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), compress_state=True)``"""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        max_open_bytes: int = 256 << 20,
        compress_state: bool = False,
        state_codec=None,
        state_min_numel: int = 1024,
    ):
        if isinstance(optimizer, CompressedOptimizer):
            raise TypeError("optimizer is already a CompressedOptimizer")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"CompressedOptimizer wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not isinstance(max_open_bytes, int) or max_open_bytes < 0:
            raise ValueError(f"max_open_bytes must be an int >= 0 (0: one batch), got {max_open_bytes!r}")
        state_codec = state_codec if state_codec is not None else Lossless()
        if isinstance(state_codec, Lossy):
            raise ValueError("optimizer state must be stored losslessly")
        # Deliberately not calling Optimizer.__init__: groups, state and defaults are the inner optimizer's own
        # objects, so LR schedulers, DCP and user code that edit them edit the real thing.
        self.optimizer = optimizer
        self.defaults = optimizer.defaults
        self.max_open_bytes = max_open_bytes
        self.compress_state = compress_state
        self._state_meta = ShardMeta(codec=state_codec, name="optimizer state")
        self.state_min_numel = state_min_numel
        for attr in (
            "_optimizer_step_pre_hooks",
            "_optimizer_step_post_hooks",
            "_optimizer_state_dict_pre_hooks",
            "_optimizer_state_dict_post_hooks",
            "_optimizer_load_state_dict_pre_hooks",
            "_optimizer_load_state_dict_post_hooks",
        ):
            setattr(self, attr, OrderedDict())

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups):
        self.optimizer.param_groups = groups

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, state):
        self.optimizer.state = state

    def __getattr__(self, name):  # anything else (custom optimizer attributes) is the inner optimizer's
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def __repr__(self) -> str:
        return f"CompressedOptimizer({self.optimizer!r}, compress_state={self.compress_state})"

    # -- step ------------------------------------------------------------------------------------------------
    def _batches(self) -> list[list[list]]:
        """Per batch, per param group, the parameters (with gradients) to update together."""
        batches, current, size = [], [[] for _ in self.param_groups], 0
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p.grad is None:
                    continue
                # The same on every rank (batches end in a collective, reseal.py): the global size per rank.
                world = p.device_mesh.size() if isinstance(p, DTensor) else 1
                nbytes = -(-p.numel() // world) * p.element_size()
                if self.max_open_bytes and size and size + nbytes > self.max_open_bytes:
                    batches.append(current)
                    current, size = [[] for _ in self.param_groups], 0
                current[gi].append(p)
                size += nbytes
        if size or not batches:
            batches.append(current)
        return batches

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        originals = [g["params"] for g in groups]
        check()  # before any update: decode errors of the last pass (frozen parameters' too)
        try:
            for batch in self._batches():
                params = [p for ps in batch for p in ps]
                if not params:
                    continue
                opened = self._open(params)
                decoded = open_states([sh._state for sh in opened])  # one decode for the batch
                for g, ps in zip(groups, batch):
                    g["params"] = ps
                try:
                    self.optimizer.step()
                finally:
                    for g, ps in zip(groups, originals):
                        g["params"] = ps
                    if self.compress_state:
                        opened += self._compress_state(params)
                    seal_states([s._state for s in opened], opened=decoded)  # one encode, one read for the batch
        finally:
            for g, ps in zip(groups, originals):
                g["params"] = ps
        return loss

    def _open(self, params) -> list[CompressedShard]:
        """The shards of ``params`` and of their state (decoded together by open_states)."""
        opened = []
        for p in params:
            for t in (p, *self.state.get(p, {}).values()):
                local = _local(t) if isinstance(t, torch.Tensor) else None
                if isinstance(local, CompressedShard):
                    opened.append(local)
        return opened

    def _compress_state(self, params) -> list[CompressedShard]:
        """Wrap the state tensors of ``params`` as shards (not yet sealed); returns every state shard to seal."""
        shards = []
        for p in params:
            state = self.state.get(p)
            if not state:
                continue
            for key, value in list(state.items()):
                if not isinstance(value, torch.Tensor) or key == "step":
                    continue
                local = _local(value)
                if isinstance(local, CompressedShard):
                    shards.append(local)
                elif local.dtype in SUPPORTED_DTYPES and local.numel() >= self.state_min_numel:
                    shard = CompressedShard.wrap(local, self._state_meta, owns_storage=False)
                    shards.append(shard)
                    state[key] = _rewrap(value, shard)
        return shards

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict) -> None:
        self.optimizer.add_param_group(param_group)

    # -- state dicts: always dense ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        sd = self.optimizer.state_dict()
        sd["state"] = {k: {kk: self._dense(vv) for kk, vv in v.items()} for k, v in sd["state"].items()}
        return sd

    @staticmethod
    def _dense(value):
        if isinstance(value, torch.Tensor) and isinstance(_local(value), CompressedShard):
            shard = _local(value)
            return _rewrap(value, shard.dense() if shard.is_sealed else shard.dense().clone())
        return value

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict)
        if self.compress_state:
            shards = self._compress_state([p for g in self.param_groups for p in g["params"]])
            seal_states([s._state for s in shards], agree=False)

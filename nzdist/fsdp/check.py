"""Decode errors of the all-gather path, raised at a step boundary.

The all-gather hooks never read device memory: each parameter's decoder ORs what is wrong with rank r's slot
into word r of the parameter's error words (``GatherPlan.errors``, on the shard's device). ``check`` reads the
words of every parameter decoded since the last check in one host synchronisation per device and raises on
every rank alike (every rank decoded every rank's slot), naming the parameter and the rank:

- :class:`nzdist.FormatError` for a corrupt slot or payload;
- :class:`nzdist.fsdp.CapacityError` for an overflow mark the ranks had not agreed on (a shard re-encoded
  outside a batched re-encode outgrew its capacity).

``CompressedOptimizer.step`` and ``open_during_step`` call it before any update, so an update computed from a
corrupt decode is never applied; call ``nzdist.fsdp.check(model)`` yourself elsewhere (after an evaluation
loop, before saving).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from nzdist import _C
from nzdist.codec import FormatError, read_back
from nzdist.codec.errors import describe_error_word

from .slot import CapacityError

_OVERFLOW = _C.ERROR_BITS["overflow"]
# Plans whose error words a decode may have written since their last check, by identity.
_pending: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def error_words(plan, device: torch.device) -> torch.Tensor:
    """The parameter's error words (one per rank of its group) for a decode about to be queued; marks them
    for the next check."""
    if plan.errors is None or plan.errors.device != device or plan.errors.numel() != plan.world:
        plan.errors = torch.zeros(plan.world, dtype=torch.int32, device=device)
    _pending[id(plan)] = plan
    return plan.errors


def check(model: nn.Module | None = None, params=None) -> None:
    """Raise the decode errors recorded since the last check (all parameters, or ``model``'s / ``params``').

    >>> loss = model(x).sum(); loss.backward(); nzdist.fsdp.check(model)
    """
    plans = list(_pending.values())
    if model is not None or params is not None:
        mine = set()
        for t in model.parameters() if model is not None else params:
            local = t._local_tensor if isinstance(t, DTensor) else t
            state = getattr(local, "_state", None)  # a CompressedShard's (param.py imports this module's users)
            if state is not None:
                mine.add(id(state.plan))
        plans = [p for p in plans if id(p) in mine]
    if not plans:
        return
    by_device: dict[torch.device, list] = {}
    for p in plans:
        by_device.setdefault(p.errors.device, []).append(p)
        _pending.pop(id(p), None)
    problems = []
    for device_plans in by_device.values():
        words = read_back(torch.cat([p.errors for p in device_plans]))
        at = 0
        for p in device_plans:
            mine = words[at : at + p.world]
            at += p.world
            bad = [(r, w) for r, w in enumerate(mine) if w]
            if bad:
                p.errors.zero_()
                problems.append((p, bad))
    if not problems:
        return
    overflow_only = all(w & ~_OVERFLOW == 0 for _, bad in problems for _, w in bad)
    detail = "; ".join(
        f"{p.name or 'a parameter'}: " + ", ".join(f"rank {r}: {describe_error_word(w)}" for r, w in bad)
        for p, bad in problems
    )
    if overflow_only:
        raise CapacityError(
            f"nzdist.fsdp: a shard outgrew its all-gather capacity outside a batched re-encode ({detail}). "
            "Writes to parameters outside an optimizer step (load_state_dict, in-place ops) are agreed across "
            "ranks by nzdist.fsdp.seal(model) on every rank; the last forward/backward used an incomplete "
            "parameter and must be discarded."
        )
    raise FormatError(f"nzdist.fsdp: corrupt all-gather data, found after the decode ({detail})")

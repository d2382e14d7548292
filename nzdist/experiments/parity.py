"""Bit-for-bit comparison of two runs' final parameters: the parity verdict of every harness experiment compares
int views, so a NaN payload or a -0.0 that a float comparison would forgive still fails."""

from __future__ import annotations

import torch


def local_params(model) -> dict:
    """This rank's shards as plain CPU tensors (the state dict is dense for nzdist models too)."""
    out = {}
    for k, v in model.state_dict().items():
        local = v.to_local() if hasattr(v, "to_local") else v
        out[k] = local.detach().cpu().clone()
    return out


def same_bits(a: dict, b: dict) -> list[str]:
    """Names of the tensors whose bits differ (or that only one side has)."""
    bad = sorted(set(a) ^ set(b))
    for k in sorted(set(a) & set(b)):
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            bad.append(k)
        elif x.is_floating_point():
            view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[x.element_size()]
            if not torch.equal(x.contiguous().view(view), y.contiguous().view(view)):
                bad.append(k)
        elif not torch.equal(x, y):
            bad.append(k)
    return bad

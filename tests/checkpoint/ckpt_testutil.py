"""Helpers shared by the checkpoint tests and their torchrun workers."""

import os
import sys

import torch

from nzdist.teardown import comm_threads, end_distributed


def end_worker() -> None:
    """Finish a torchrun worker whose work is checked and done: leave the process group so that gloo's threads
    are joined before the interpreter exits (nzdist.teardown explains the abort that skipping this caused).
    DeepSpeed still holds its groups afterwards (end_distributed warns); only then is interpreter teardown
    skipped, as before."""
    end_distributed()
    if comm_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def bits(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t.view(-1).view(torch.uint8) if t.numel() else t.view(-1).to(torch.uint8)


def assert_bit_equal(a, b, where=""):
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), where
        for k in b:
            assert_bit_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bit_equal(x, y, f"{where}[{i}]")
    elif isinstance(b, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(bits(a), bits(b)), where
    else:
        assert a == b, where


def tiny_training_state(dtype=torch.float32, steps=3, seed=0):
    """A small MLP and its AdamW state after real steps."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step(model, opt, steps)
    return model, opt


def step(model, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    for _ in range(n):
        x = torch.randn(16, 32, generator=g).to(dtype)
        model(x).float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

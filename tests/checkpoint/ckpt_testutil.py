"""Helpers shared by the checkpoint tests and their torchrun workers."""

import os
import sys

import torch

from nzdist.teardown import comm_threads, end_distributed

from support import assert_bit_equal  # noqa: F401 - the checkpoint tests import it from here


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

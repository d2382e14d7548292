"""Helpers shared by the checkpoint tests and their torchrun workers."""

import torch

from support import assert_bit_equal, end_worker  # noqa: F401 - the checkpoint tests import them from here


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

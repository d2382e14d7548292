"""The main job's per-rank worker: the same byte-level GPT trained twice in one process group -- plain torch
FSDP2 ``fully_shard``, then ``nzdist.fsdp`` -- with the same seed and data, then rank 0 writes the report.

    torchrun --standalone --nproc_per_node 2 -m nzdist.launch.compare --preset tiny_cpu --out out
    mpirun -n 2 python -m nzdist.launch.mpi -m nzdist.launch.compare --preset tiny_cpu

Usually started by ``python -m nzdist.launch.main`` (which picks the preset and rank count). Exits 1 if the two
runs' losses or final parameters differ in any bit on any rank.
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch
import torch.distributed as dist

from nzdist.experiments import fsdp, report
from nzdist.experiments.config import ConfigError, ExperimentConfig, load_preset
from nzdist.experiments.data import stdlib_bytes
from nzdist.experiments.dist import init_distributed, resolve_device, set_threads
from nzdist.experiments.parity import local_params, same_bits
from nzdist.teardown import end_distributed

from .presets import add_override_args, overrides_from

RUNS = {"fsdp2": "plain", "nzdist": "nzdist"}  # report name -> harness kind; plain torch first: the baseline


def train_run(name: str, preset: ExperimentConfig, mesh, tokens, device: torch.device) -> tuple[dict, dict]:
    """Build, shard and train one run; returns (this rank's record, this rank's final parameter shards)."""
    record, model, opt = fsdp.train(RUNS[name], preset, tokens, device, mesh, progress=True)
    params = local_params(model)
    del model, opt
    gc.collect()
    return record, params


# -------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nzdist.launch.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="tiny_cpu", help="tiny_cpu, gpu_1b, or a path to a preset JSON file")
    p.add_argument("--out", default="out", help="directory for report.json and report.png (rank 0 writes)")
    add_override_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = load_preset(args.preset, overrides_from(args))
    device_type = resolve_device(preset)
    rank, world, device = init_distributed(device_type, "nzdist.launch.compare")
    try:
        rc = _compare(args, preset, rank, world, device)
    except BaseException:
        if dist.is_initialized():  # failing: leave at once (a peer may be stuck in a collective)
            dist.destroy_process_group()
        raise
    end_distributed(barrier=False)  # every rank just took part in the verdict's broadcast
    return rc


def _compare(args, preset: ExperimentConfig, rank: int, world: int, device: torch.device) -> int:
    from torch.distributed.device_mesh import init_device_mesh

    threads = set_threads(preset)
    mesh = init_device_mesh(device.type, (world,))
    tokens = stdlib_bytes(preset.data_bytes)
    records, plain_params = {}, None
    for name in RUNS:
        records[name], params = train_run(name, preset, mesh, tokens, device)
        if plain_params is None:
            plain_params = params
        else:
            records[name]["params_differ"] = same_bits(plain_params, params)
    gathered = [None] * world
    dist.all_gather_object(gathered, records)
    ok = True
    if rank == 0:
        env = {
            "world_size": world,
            "device": device.type,
            "backend": dist.get_backend(),
            "threads_per_rank": threads,
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        }
        results = report.build_results(preset.as_dict(), env, gathered)
        paths = report.save(results, args.out)
        print(report.format_report(results, paths), flush=True)
        ok = results["identical"]["all"]
    flag = [ok]
    dist.broadcast_object_list(flag, src=0)  # every rank exits with the verdict, so launchers see it
    return 0 if flag[0] else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"nzdist.launch.compare: error: {e}", file=sys.stderr)
        sys.exit(2)

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
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from .presets import Preset, PresetError, add_override_args, load_preset, overrides_from

RUNS = ("fsdp2", "nzdist")  # plain torch first: the baseline every ratio divides by


# ---------------------------------------------------------------------------------------------- setup
def _dtype(name: str | None):
    return None if name is None else getattr(torch, name)


def resolve_device(preset: Preset) -> str:
    if preset.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise PresetError(f"preset {preset.name!r} asks for device 'cuda' but torch sees no GPU "
                          f"(torch {torch.__version__}); use --device cpu or a CPU preset")
    return preset.device


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the process group the launcher described (torchrun or nzdist.launch.mpi env://), unless the
    launcher already did; gloo on CPU, NCCL on CUDA."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise RuntimeError("nzdist.launch.compare is a per-rank worker: start it under torchrun, "
                               "nzdist.launch.mpi, or simply `python -m nzdist.launch.main`")
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=timedelta(minutes=10),
                                device_id=dev if device == "cuda" else None)
    return dist.get_rank(), dist.get_world_size(), dev


def set_threads(preset: Preset) -> int:
    import nzdist

    n = preset.threads_per_rank
    if n == 0:  # ranks on one node share its cores; oversubscribing them makes every rank slower
        n = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(n)
    nzdist.set_num_threads(n)
    return n


# ------------------------------------------------------------------------------------- wire counting
# torch 2.13 renamed all_gather_into_tensor (now deprecated) to all_gather_single; FSDP2 itself calls the new name.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _counting_all_gather_class():
    from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather  # the interface set_custom_all_gather takes

    class CountingAllGather(AllGather):
        """FSDP2's default all-gather, counting the bytes each rank puts on the wire. Installed the same way on
        both runs (``FSDPModule.set_custom_all_gather``), so the two byte counts are measured identically."""

        def __init__(self) -> None:
            self.calls = 0
            self.bytes = 0

        def allocate(self, size, *, dtype, device):
            return torch.empty(*size, dtype=dtype, device=device)

        def __call__(self, output_tensor, input_tensor, group, async_op=False):
            self.calls += 1
            self.bytes += input_tensor.numel() * input_tensor.element_size()
            return _all_gather(output_tensor, input_tensor, group=group, async_op=async_op)

    return CountingAllGather


class BroadcastCounter:
    """Counts ``torch.distributed.broadcast`` bytes while active: nzdist.fsdp sends a shard that outgrew its agreed
    all-gather capacity raw by broadcast (a "spill"), which the all-gather counter cannot see. Plain FSDP2 issues
    no broadcasts while training, so both runs are measured the same way."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0
        self._saved = None

    def __enter__(self):
        self._saved = dist.broadcast

        def counting_broadcast(tensor, *args, **kwargs):
            self.calls += 1
            self.bytes += tensor.numel() * tensor.element_size()
            return self._saved(tensor, *args, **kwargs)

        dist.broadcast = counting_broadcast
        return self

    def __exit__(self, *exc) -> None:
        dist.broadcast = self._saved


def install_wire_counter(model: torch.nn.Module):
    from torch.distributed.fsdp import FSDPModule

    counter = _counting_all_gather_class()()
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.set_custom_all_gather(counter)
    return counter


# ------------------------------------------------------------------------------------------- training
def shard(kind: str, model, preset: Preset, mesh) -> None:
    """Block groups then the root, identically for both runs; only the ``fully_shard`` differs."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp import fully_shard as torch_fully_shard

    from .train import Block

    kw = {"mesh": mesh, "reshard_after_forward": preset.reshard_after_forward}
    if preset.mp_param_dtype is not None:
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=_dtype(preset.mp_param_dtype))
    if kind == "fsdp2":
        for blk in model.blocks:
            torch_fully_shard(blk, **kw)
        torch_fully_shard(model, **kw)
        return
    try:
        import nzdist
        import nzdist.fsdp as nzfsdp
    except Exception as e:  # report exactly what failed, on every rank
        raise RuntimeError(f"the nzdist run needs nzdist.fsdp, which failed to import: {type(e).__name__}: {e}") from e
    if preset.headroom is not None:
        kw["headroom"] = preset.headroom
    nzfsdp.shard_model(model, nzfsdp.TransformerLayerPolicy({Block}),
                       codec=nzdist.Lossless(chunk_elems=preset.chunk_elems), **kw)


def make_optimizer(kind: str, model, preset: Preset):
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    if kind == "fsdp2":
        return opt
    import nzdist.fsdp as nzfsdp

    return nzfsdp.CompressedOptimizer(opt, compress_state=preset.compress_optimizer_state,
                                      max_open_bytes=preset.max_open_bytes)


def memory_of(model, opt) -> dict:
    """Resident parameter and optimizer bytes on this rank -- one accounting for both runs."""
    import nzdist

    return nzdist.memory_report(model, opt).as_dict()


def local_params(model) -> dict:
    """This rank's shards as plain CPU tensors (the state dict is dense for nzdist models too)."""
    out = {}
    for k, v in model.state_dict().items():
        local = v.to_local() if hasattr(v, "to_local") else v
        out[k] = local.detach().cpu().clone()
    return out


def train_run(kind: str, preset: Preset, mesh, tokens, rank: int, world: int,
              device: torch.device) -> tuple[dict, dict]:
    """Build, shard and train one run; returns (this rank's record, this rank's final parameter shards)."""
    from tqdm import tqdm

    import nzdist

    from .train import ModelConfig, build_model

    cfg = ModelConfig(d_model=preset.d_model, n_layer=preset.n_layer, n_head=preset.n_head, seq_len=preset.seq_len)
    with torch.device(device):  # initialise on the device (a 1B model's CPU init is slow); same seed both runs
        model = build_model(cfg, preset.seed)
    model = model.to(dtype=_dtype(preset.dtype))
    shard(kind, model, preset, mesh)
    wire = install_wire_counter(model)
    opt = make_optimizer(kind, model, preset)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    nzdist.comm_stats(reset=True)
    losses, times = [], []
    bar = tqdm(range(preset.steps), desc=f"{kind:>6}", unit="step", disable=rank != 0, dynamic_ncols=True,
               file=sys.stderr)
    t_run = time.perf_counter()
    spills = BroadcastCounter()
    with spills:
        _train_steps(model, opt, bar, tokens, preset, cfg, rank, world, device, losses, times)
    record = {"losses": losses, "loss_hex": [v.hex() for v in losses], "step_times": times,
              "wall_s": time.perf_counter() - t_run, "memory": memory_of(model, opt),
              "comm_stats": nzdist.comm_stats(reset=True).as_dict(),
              "wire": {"all_gathers": wire.calls, "bytes": wire.bytes, "broadcasts": spills.calls,
                       "broadcast_bytes": spills.bytes},
              "peak_device_bytes": torch.cuda.max_memory_allocated() if cuda else None}
    params = local_params(model)
    del model, opt
    gc.collect()
    return record, params


def _train_steps(model, opt, bar, tokens, preset, cfg, rank, world, device, losses, times) -> None:
    from .train import batch_for_step

    for step in bar:
        x, y = batch_for_step(tokens, step, preset.batch, cfg.seq_len, rank, world, preset.seed)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        t0 = time.perf_counter()
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()  # also waits for the device, so the step time below is complete
        times.append(time.perf_counter() - t0)
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
    bar.close()


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


# -------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nzdist.launch.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny_cpu", help="tiny_cpu, gpu_1b, or a path to a preset JSON file")
    p.add_argument("--out", default="out", help="directory for report.json and report.png (rank 0 writes)")
    add_override_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    preset = load_preset(args.preset, overrides_from(args))
    device_type = resolve_device(preset)
    rank, world, device = init_distributed(device_type)
    try:
        return _compare(args, preset, rank, world, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _compare(args, preset: Preset, rank: int, world: int, device: torch.device) -> int:
    from torch.distributed.device_mesh import init_device_mesh

    from . import report
    from .train import stdlib_bytes

    threads = set_threads(preset)
    mesh = init_device_mesh(device.type, (world,))
    tokens = stdlib_bytes(preset.data_bytes)
    records, plain_params = {}, None
    for kind in RUNS:
        records[kind], params = train_run(kind, preset, mesh, tokens, rank, world, device)
        if plain_params is None:
            plain_params = params
        else:
            records[kind]["params_differ"] = same_bits(plain_params, params)
    gathered = [None] * world
    dist.all_gather_object(gathered, records)
    ok = True
    if rank == 0:
        env = {"world_size": world, "device": device.type, "backend": dist.get_backend(),
               "threads_per_rank": threads, "torch": torch.__version__,
               "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
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
    except PresetError as e:
        print(f"nzdist.launch.compare: error: {e}", file=sys.stderr)
        sys.exit(2)

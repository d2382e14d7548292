"""The main job: train a small byte-level GPT on the Python standard library's sources twice in one run --
plain torch FSDP2 ``fully_shard`` and nzdist's -- with the same seed and data, and report loss per step
(identical bits), resident parameter/optimizer bytes per rank, all-gather bytes and step time.

    python -m nzdist.launch.main                     # CPU: 2 ranks, gloo, preset tiny_cpu
    python -m nzdist.launch.main --steps 5 --out /tmp/nz
    python -m nzdist.launch.main --preset gpu_1b     # a GPU machine: one rank per GPU, NCCL (the default there)

It starts ``torchrun --standalone --nproc_per_node N -m nzdist.launch.compare ...`` (printed before it runs);
rank 0 prints the report and writes OUT/report.json and OUT/report.png. Exit status: 0 when both runs match bit
for bit, 1 when they differ, 2 for bad arguments, otherwise the failing rank's status.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from nzdist.experiments.config import ConfigError, load_preset, preset_path

from .presets import add_override_args, override_argv, overrides_from

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="nzdist train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--preset",
        default=None,
        help="tiny_cpu, gpu_1b, or a path to a preset JSON (default: gpu_1b if a GPU is visible, else tiny_cpu)",
    )
    p.add_argument(
        "--nproc", type=int, default=None, help="ranks on this machine (default: the number of GPUs, or 2 on CPU)"
    )
    p.add_argument("--out", default="out", help="directory for report.json and report.png (default: out/)")
    add_override_args(p)
    return p, p.parse_args(argv)


def build_command(args: argparse.Namespace, nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "nzdist.launch.compare",
        "--preset",
        preset_path(args.preset),
        "--out",
        args.out,
        *override_argv(args),
    ]


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    if args.nproc is not None and args.nproc < 1:
        parser.error(f"--nproc must be at least 1, got {args.nproc}")
    if args.preset is not None:  # a bad name or knob is reported before torch is even imported
        try:
            load_preset(args.preset, overrides_from(args))
        except ConfigError as e:
            parser.error(str(e))
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.preset is None:
        args.preset = "gpu_1b" if gpus and args.device in (None, "auto", "cuda") else "tiny_cpu"
    try:
        preset = load_preset(args.preset, overrides_from(args))
    except ConfigError as e:
        parser.error(str(e))
    device = preset.device if preset.device != "auto" else ("cuda" if gpus else "cpu")
    if device == "cuda" and not gpus:
        parser.error(
            f"preset {preset.name!r} runs on CUDA but torch {torch.__version__} sees no GPU; "
            "pass --device cpu (and a small preset such as tiny_cpu)"
        )
    nproc = args.nproc if args.nproc is not None else (gpus if device == "cuda" else 2)
    if device == "cuda" and nproc > gpus:
        parser.error(f"--nproc {nproc} needs {nproc} GPUs; this machine has {gpus}")
    cmd = build_command(args, nproc)
    env = dict(os.environ)
    # the ranks import nzdist from the same place as this process, installed or not
    env["PYTHONPATH"] = os.pathsep.join(x for x in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if x)
    print("+ " + shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, env=env).returncode
    if rc not in (0, 1):
        print(f"nzdist train: the ranks failed (exit status {rc}); their errors are above", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())

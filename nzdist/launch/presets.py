"""Command-line overrides of a preset, shared by ``nzdist train`` (``nzdist.launch.main``) and its per-rank worker
(``nzdist.launch.compare``), so the two accept the same flags and the launcher forwards exactly what was given.
The presets themselves and their schema live in :mod:`nzdist.experiments.config`.
"""

from __future__ import annotations

import argparse


def add_override_args(parser: argparse.ArgumentParser) -> None:
    """The knobs a user overrides most, shared by ``nzdist.launch.main`` and the worker."""
    g = parser.add_argument_group("preset overrides (default: the preset's value)")
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--batch", type=int, default=None, help="sequences per rank per step")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--d-model", dest="d_model", type=int, default=None)
    g.add_argument("--layers", dest="n_layer", type=int, default=None)
    g.add_argument("--seq-len", dest="seq_len", type=int, default=None)
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)


def overrides_from(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in ("steps", "batch", "seed", "d_model", "n_layer", "seq_len", "device")}


def override_argv(args: argparse.Namespace) -> list[str]:
    """The override flags back as argv, to forward to the worker."""
    flags = {
        "steps": "--steps",
        "batch": "--batch",
        "seed": "--seed",
        "d_model": "--d-model",
        "n_layer": "--layers",
        "seq_len": "--seq-len",
        "device": "--device",
    }
    out = []
    for key, flag in flags.items():
        value = getattr(args, key)
        if value is not None:
            out += [flag, str(value)]
    return out

"""Presets for the main job (``nzdist/configs/*.json``, package data; the checkout's ``configs/`` is a link to
that folder): one flat dataclass, validated when it is built.

A preset file is JSON, which has no comments, so every knob is documented in a ``"knobs"`` dict next to the
values (``{"d_model": 128, ..., "knobs": {"d_model": "width of the residual stream", ...}}``); loading refuses
a file whose knobs are not all documented, so the files cannot drift into undocumented settings.

    preset = load_preset("tiny_cpu", overrides={"steps": 5})   # a name under nzdist/configs/ or a .json path
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, fields

# Shipped inside the package (pyproject.toml package-data), so a wheel install finds them from any directory.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
PRESETS = ("tiny_cpu", "gpu_1b")
_DTYPES = ("float32", "bfloat16", "float16")
_META = ("name", "description", "knobs")  # keys of a preset file that are not knobs


class PresetError(ValueError):
    """A preset name, file or knob value that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class Preset:
    name: str = "custom"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    dtype: str = "bfloat16"  # parameter storage dtype of both runs
    mp_param_dtype: str | None = None  # FSDP2 MixedPrecisionPolicy(param_dtype=...) if set
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    seq_len: int = 64
    batch: int = 8  # sequences per rank per step
    steps: int = 30
    warmup_steps: int = 1  # left out of the step-time summary
    lr: float = 1e-3
    weight_decay: float = 0.01
    seed: int = 0
    data_bytes: int = 2 << 20
    codec: str = "lossless"
    chunk_elems: int = 65536
    headroom: float | None = None  # None: nzdist.fsdp's default
    compress_optimizer_state: bool = True
    max_open_bytes: int = 256 << 20
    reshard_after_forward: bool = True
    threads_per_rank: int = 0  # 0: the machine's cores divided among the ranks on this node

    def __post_init__(self) -> None:
        def need(ok: bool, knob: str, what: str) -> None:
            if not ok:
                raise PresetError(f"preset {self.name!r}: {knob} must be {what}, got {getattr(self, knob)!r}")

        for knob in ("d_model", "n_layer", "n_head", "seq_len", "batch", "steps", "chunk_elems"):
            value = getattr(self, knob)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, knob, "an integer >= 1")
        for knob in ("warmup_steps", "seed", "max_open_bytes", "threads_per_rank"):
            value = getattr(self, knob)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 0, knob, "an integer >= 0")
        need(self.device in ("auto", "cpu", "cuda"), "device", "'auto', 'cpu' or 'cuda'")
        need(self.dtype in _DTYPES, "dtype", f"one of {_DTYPES}")
        need(self.mp_param_dtype is None or self.mp_param_dtype in _DTYPES, "mp_param_dtype",
             f"null or one of {_DTYPES}")
        need(self.d_model % self.n_head == 0, "d_model", f"a multiple of n_head={self.n_head}")
        need(self.codec == "lossless", "codec", "'lossless' (trained weights change every step; lossy re-rounds)")
        need(isinstance(self.lr, (int, float)) and self.lr > 0, "lr", "a number > 0")
        need(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(self.headroom is None or (isinstance(self.headroom, (int, float)) and self.headroom >= 0),
             "headroom", "null or a number >= 0")
        need(isinstance(self.data_bytes, int) and self.data_bytes >= 4096, "data_bytes", "an integer >= 4096")
        need(self.seq_len + 1 < self.data_bytes, "seq_len", "shorter than data_bytes")
        for knob in ("compress_optimizer_state", "reshard_after_forward"):
            need(isinstance(getattr(self, knob), bool), knob, "true or false")

    def as_dict(self) -> dict:
        return asdict(self)


KNOBS = tuple(f.name for f in fields(Preset) if f.name != "name")


def config_file(filename: str) -> str:
    """The path of a config shipped with the package: ``config_file("neuzip_zero.json")``."""
    return os.path.join(CONFIG_DIR, filename)


def preset_path(name_or_path: str) -> str:
    """``tiny_cpu`` -> ``<site-packages>/nzdist/configs/tiny_cpu.json``; an existing path is used as is."""
    if name_or_path in PRESETS:
        return config_file(f"{name_or_path}.json")
    if name_or_path.endswith(".json"):
        if not os.path.isfile(name_or_path):
            raise PresetError(f"preset file {name_or_path!r} does not exist")
        return name_or_path
    raise PresetError(f"unknown preset {name_or_path!r}: expected one of {', '.join(PRESETS)} "
                      "or a path to a .json file")


def load_preset(name_or_path: str, overrides: dict | None = None) -> Preset:
    """Read, check and return a preset; ``overrides`` (knob -> value, None = keep) win over the file."""
    path = preset_path(name_or_path)
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise PresetError(f"preset file {path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise PresetError(f"preset file {path} must hold a JSON object")
    docs = raw.get("knobs", {})
    values = {k: v for k, v in raw.items() if k not in _META}
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise PresetError(f"preset file {path}: unknown knob(s) {unknown}; known: {', '.join(KNOBS)}")
    undocumented = sorted(k for k in values if not isinstance(docs.get(k), str) or not docs[k].strip())
    if undocumented:
        raise PresetError(f"preset file {path}: knob(s) {undocumented} have no entry in its \"knobs\" doc dict")
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Preset(name=raw.get("name", os.path.splitext(os.path.basename(path))[0]), **values)


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
    flags = {"steps": "--steps", "batch": "--batch", "seed": "--seed", "d_model": "--d-model", "n_layer": "--layers",
             "seq_len": "--seq-len", "device": "--device"}
    out = []
    for key, flag in flags.items():
        value = getattr(args, key)
        if value is not None:
            out += [flag, str(value)]
    return out

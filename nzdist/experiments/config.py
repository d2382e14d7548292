"""The experiment harness's one config schema: a flat frozen dataclass, validated when it is built.

Every run the harness trains -- the main job's two FSDP2 runs, ``launch/train.py --backend fsdp``, ``nzdist bench
fsdp`` -- is described by one :class:`ExperimentConfig`. Presets (``nzdist/configs/*.json``, package data; the
checkout's ``configs/`` is a link to that folder) are files of its knobs; :func:`from_deepspeed` maps a DeepSpeed
JSON onto it, the only place the two schemas meet.

A preset file is JSON, which has no comments, so every knob is documented in a ``"knobs"`` dict next to the
values (``{"d_model": 128, ..., "knobs": {"d_model": "width of the residual stream", ...}}``); loading refuses
a file whose knobs are not all documented, so the files cannot drift into undocumented settings.

    cfg = load_preset("tiny_cpu", overrides={"steps": 5})   # a name under nzdist/configs/ or a .json path
    cfg, kind = from_deepspeed(load_ds_config("configs/neuzip_zero.json"), steps=20)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .models import ModelConfig

# Shipped inside the package (pyproject.toml package-data), so a wheel install finds them from any directory.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
PRESETS = ("tiny_cpu", "gpu_1b")
_DTYPES = ("float32", "bfloat16", "float16")
_META = ("name", "description", "knobs")  # keys of a preset file that are not knobs
_GPT = ModelConfig()


class ConfigError(ValueError):
    """A preset name, file or knob value that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "custom"
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    dtype: str = "bfloat16"  # parameter storage dtype of both runs
    mp_param_dtype: str | None = None  # FSDP2 MixedPrecisionPolicy(param_dtype=...) if set
    mp_reduce_dtype: str | None = None  # ... and reduce_dtype=... if set
    d_model: int = _GPT.d_model  # the GPT's shape; its defaults are the model's own
    n_layer: int = _GPT.n_layer
    n_head: int = _GPT.n_head
    seq_len: int = _GPT.seq_len
    batch: int = 8  # sequences per rank per step
    steps: int = 30
    warmup_steps: int = 1  # left out of the step-time summary
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 0.0  # 0: no clipping
    seed: int = 0
    data_bytes: int = 2 << 20
    freeze: tuple = ()  # parameter-name prefixes to freeze
    codec: str = "lossless"
    chunk_elems: int | None = None  # None: the codec's default for the dtype (64 Ki; 128 Ki for fp16)
    frozen_codec: str = "lossless"  # "lossless" | "lossy": the codec of frozen parameters
    mantissa_bits: int = 3  # frozen_codec "lossy"
    block_size: int = 512  # frozen_codec "lossy"
    headroom: float | None = None  # None: nzdist.fsdp's default
    mp_storage: str = "remainder"  # fp32 shards gathered as bf16: "remainder" (bf16 payload + 16 bits) | "cast"
    compress_optimizer_state: bool = True
    max_open_bytes: int = 256 << 20
    reshard_after_forward: bool | None = True  # None: torch's default
    cpu_offload: bool = False  # FSDP2 CPUOffloadPolicy: shards, gradients and the optimizer step on the host
    threads_per_rank: int = 0  # 0: the machine's cores divided among the ranks on this node

    def __post_init__(self) -> None:
        # JSON gives lists; the config stays hashable and immutable
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "freeze", tuple(self.freeze))

        def need(ok: bool, knob: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"preset {self.name!r}: {knob} must be {what}, got {getattr(self, knob)!r}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        for knob in ("d_model", "n_layer", "n_head", "seq_len", "batch", "steps", "block_size"):
            need(is_int(getattr(self, knob)) and getattr(self, knob) >= 1, knob, "an integer >= 1")
        need(
            self.chunk_elems is None or (is_int(self.chunk_elems) and self.chunk_elems >= 1),
            "chunk_elems",
            "null or an integer >= 1",
        )
        for knob in ("warmup_steps", "seed", "max_open_bytes", "threads_per_rank"):
            need(is_int(getattr(self, knob)) and getattr(self, knob) >= 0, knob, "an integer >= 0")
        need(self.device in ("auto", "cpu", "cuda"), "device", "'auto', 'cpu' or 'cuda'")
        need(self.dtype in _DTYPES, "dtype", f"one of {_DTYPES}")
        for knob in ("mp_param_dtype", "mp_reduce_dtype"):
            need(getattr(self, knob) is None or getattr(self, knob) in _DTYPES, knob, f"null or one of {_DTYPES}")
        need(self.d_model % self.n_head == 0, "d_model", f"a multiple of n_head={self.n_head}")
        need(self.codec == "lossless", "codec", "'lossless' (trained weights change every step; lossy re-rounds)")
        need(self.frozen_codec in ("lossless", "lossy"), "frozen_codec", "'lossless' or 'lossy'")
        need(self.mp_storage in ("remainder", "cast"), "mp_storage", "'remainder' or 'cast'")
        need(isinstance(self.cpu_offload, bool), "cpu_offload", "true or false")
        need(is_int(self.mantissa_bits) and 0 <= self.mantissa_bits <= 7, "mantissa_bits", "an integer in 0..7")
        need(is_num(self.lr) and self.lr > 0, "lr", "a number > 0")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0")
        need(
            len(self.betas) == 2 and all(is_num(b) and 0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)"
        )
        need(is_num(self.eps) and self.eps > 0, "eps", "a number > 0")
        need(is_num(self.grad_clip) and self.grad_clip >= 0, "grad_clip", "a number >= 0 (0: no clipping)")
        need(
            self.headroom is None or (is_num(self.headroom) and self.headroom >= 0), "headroom", "null or a number >= 0"
        )
        need(is_int(self.data_bytes) and self.data_bytes >= 4096, "data_bytes", "an integer >= 4096")
        need(self.seq_len + 1 < self.data_bytes, "seq_len", "shorter than data_bytes")
        need(all(isinstance(p, str) and p for p in self.freeze), "freeze", "a list of parameter-name prefixes")
        need(isinstance(self.compress_optimizer_state, bool), "compress_optimizer_state", "true or false")
        need(
            self.reshard_after_forward is None or isinstance(self.reshard_after_forward, bool),
            "reshard_after_forward",
            "null, true or false",
        )

    def as_dict(self) -> dict:
        return asdict(self)


KNOBS = tuple(f.name for f in fields(ExperimentConfig) if f.name != "name")


def config_file(filename: str) -> str:
    """The path of a config shipped with the package: ``config_file("neuzip_zero.json")``."""
    return os.path.join(CONFIG_DIR, filename)


def default_deepspeed_config() -> str:
    """configs/neuzip_zero.json relative to the working directory if it has one (a checkout, or a user's edited
    copy), else the copy shipped in the package (nzdist/configs/), so a wheel install runs from anywhere."""
    rel = os.path.join("configs", "neuzip_zero.json")
    return rel if os.path.exists(rel) else config_file("neuzip_zero.json")


def preset_path(name_or_path: str) -> str:
    """``tiny_cpu`` -> ``<site-packages>/nzdist/configs/tiny_cpu.json``; an existing path is used as is."""
    if name_or_path in PRESETS:
        return config_file(f"{name_or_path}.json")
    if name_or_path.endswith(".json"):
        if not os.path.isfile(name_or_path):
            raise ConfigError(f"preset file {name_or_path!r} does not exist")
        return name_or_path
    raise ConfigError(
        f"unknown preset {name_or_path!r}: expected one of {', '.join(PRESETS)} or a path to a .json file"
    )


def load_preset(name_or_path: str, overrides: dict | None = None) -> ExperimentConfig:
    """Read, check and return a preset; ``overrides`` (knob -> value, None = keep) win over the file."""
    path = preset_path(name_or_path)
    try:
        with open(path) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"preset file {path} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"preset file {path} must hold a JSON object")
    docs = raw.get("knobs", {})
    values = {k: v for k, v in raw.items() if k not in _META}
    unknown = sorted(set(values) - set(KNOBS))
    if unknown:
        raise ConfigError(f"preset file {path}: unknown knob(s) {unknown}; known: {', '.join(KNOBS)}")
    undocumented = sorted(k for k in values if not isinstance(docs.get(k), str) or not docs[k].strip())
    if undocumented:
        raise ConfigError(f'preset file {path}: knob(s) {undocumented} have no entry in its "knobs" doc dict')
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return ExperimentConfig(name=raw.get("name", os.path.splitext(os.path.basename(path))[0]), **values)


_ADAMW_PARAMS = {"lr": "lr", "betas": "betas", "eps": "eps", "weight_decay": "weight_decay"}


def from_deepspeed(ds_config: Mapping[str, Any], **knobs: Any) -> tuple[ExperimentConfig, str]:
    """The FSDP2 run that matches a DeepSpeed config: ``(config, kind)``, kind ``"nzdist"`` when the config has
    an enabled ``"neuzip"`` section, else ``"plain"``. ``knobs`` (model shape, steps, seed...) win.

    ``bf16`` -> FSDP2 mixed precision (bf16 compute, fp32 sharded parameters and reduction); ``optimizer.params``
    -> AdamW's; ``gradient_clipping`` -> ``clip_grad_norm_``; ``train_micro_batch_size_per_gpu`` -> batch;
    ``neuzip`` -> the codecs (validated by DeepSpeed's own ``NeuzipConfig``, so both backends refuse the same
    sections; a lossy section keeps trainable weights lossless and codes frozen ones lossily).
    """
    from nzdist.deepspeed.config import NeuzipConfig

    bf16 = bool((ds_config.get("bf16") or {}).get("enabled"))
    opt = dict((ds_config.get("optimizer") or {}).get("params") or {"lr": 1e-3})
    opt.pop("torch_adam", None)
    unknown = sorted(set(opt) - set(_ADAMW_PARAMS))
    if unknown:
        raise ConfigError(f"optimizer.params {unknown} have no FSDP2 equivalent here; known: {sorted(_ADAMW_PARAMS)}")
    values: dict[str, Any] = {
        "name": "deepspeed",
        "dtype": "float32",
        "mp_param_dtype": "bfloat16" if bf16 else None,
        "mp_reduce_dtype": "float32" if bf16 else None,
        "batch": ds_config.get("train_micro_batch_size_per_gpu", 4),
        "grad_clip": ds_config.get("gradient_clipping", 0.0),
        "compress_optimizer_state": False,
        "reshard_after_forward": None,
        **{_ADAMW_PARAMS[k]: v for k, v in opt.items()},
    }
    section = ds_config.get("neuzip")
    kind = "nzdist" if section is not None and section.get("enabled", True) else "plain"
    if kind == "nzdist":
        nz = NeuzipConfig.from_dict(section)  # the same validation as the DeepSpeed path
        values.update(chunk_elems=nz.chunk_elems, frozen_codec=nz.codec)
        if nz.codec == "lossy":
            values.update(mantissa_bits=nz.mantissa_bits, block_size=nz.block_size)
    return replace(ExperimentConfig(**values), **knobs), kind

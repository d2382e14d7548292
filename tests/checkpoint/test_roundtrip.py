"""Plain (single-process) save/load: every dtype and value kind comes back exactly; floats are compressed."""

import copy

import pytest
import torch

import nzdist
import nzdist.checkpoint as ckpt

from ckpt_testutil import assert_bit_equal, tiny_training_state


def _state():
    g = torch.Generator().manual_seed(0)
    return {
        "bf16": torch.randn(300, 70, generator=g).bfloat16(),
        "fp16": torch.randn(1000, generator=g).half(),
        "fp32": torch.randn(64, 33, generator=g),
        "special": torch.tensor([float("nan"), float("inf"), -0.0, 1e-40, -float("inf")]),
        "noncontig": torch.randn(40, 30, generator=g).t(),
        "int64": torch.arange(17),
        "bool": torch.tensor([True, False, True]),
        "uint8": torch.randint(0, 255, (99,), dtype=torch.uint8, generator=g),
        "empty": torch.empty(0, 4),
        "scalar": torch.tensor(3.5),
        "nested": {"list": [1, "two", 3.0], "t": torch.ones(3, dtype=torch.float64)},
        "step": 12,
    }


def _zeros_like(sd):
    out = {}
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            out[k] = torch.zeros_like(v.contiguous())
        elif isinstance(v, dict):
            out[k] = _zeros_like(v)
        else:
            out[k] = None
    return out


def test_roundtrip_all_kinds(tmp_path):
    sd = _state()
    res = ckpt.save(sd, tmp_path / "c")
    assert res.kind == "full" and res.stored_bytes > 0
    got = _zeros_like(sd)
    ckpt.load(got, tmp_path / "c")
    expect = copy.deepcopy(sd)
    expect["noncontig"] = expect["noncontig"].contiguous()
    assert_bit_equal(got, expect)


def test_float_tensors_are_compressed(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"w": torch.randn(1 << 18, generator=g).bfloat16()}
    res = ckpt.save(sd, tmp_path / "c")
    assert res.dense_bytes == 2 << 18
    # Gaussian bf16: sign + ~2.1-bit exponent + 7 raw mantissa bits, well under 16.
    assert res.stored_bytes < 0.75 * res.dense_bytes


def test_model_and_optimizer_state(tmp_path):
    model, opt = tiny_training_state()
    ckpt.save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp_path / "c")
    model2, opt2 = tiny_training_state(seed=5)
    sd = {"model": model2.state_dict(), "optim": opt2.state_dict()}
    ckpt.load(sd, tmp_path / "c")
    model2.load_state_dict(sd["model"])
    opt2.load_state_dict(sd["optim"])
    assert_bit_equal(model2.state_dict(), model.state_dict())
    assert_bit_equal(opt2.state_dict()["state"], opt.state_dict()["state"])


def test_nzdist_lossy_codec_is_close(tmp_path):
    w = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    ckpt.save({"w": w}, tmp_path / "c", codec=nzdist.Lossy(mantissa_bits=7, block_size=0))
    got = {"w": torch.zeros_like(w)}
    ckpt.load(got, tmp_path / "c")
    rel = ((got["w"] - w).abs() / w.abs()).max().item()
    assert 0 < rel <= 2.0**-8


def test_overwrite_false_refuses(tmp_path):
    ckpt.save({"a": torch.ones(3)}, tmp_path / "c")
    with pytest.raises(FileExistsError):
        ckpt.save({"a": torch.ones(3)}, tmp_path / "c", overwrite=False)
    ckpt.save({"a": torch.full((3,), 2.0)}, tmp_path / "c")  # default replaces
    got = {"a": torch.zeros(3)}
    ckpt.load(got, tmp_path / "c")
    assert got["a"].tolist() == [2.0, 2.0, 2.0]


def test_missing_key_and_missing_checkpoint(tmp_path):
    ckpt.save({"a": torch.ones(3)}, tmp_path / "c")
    with pytest.raises(Exception, match="b"):
        ckpt.load({"a": torch.zeros(3), "b": torch.zeros(2)}, tmp_path / "c")
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load({"a": torch.zeros(3)}, tmp_path / "nope")

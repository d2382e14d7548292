"""NzdistCheckpointEngine: a real 2-rank ZeRO-3 engine (torchrun, DS_ACCELERATOR=cpu) saves and a fresh engine
loads bit-identically; in-process: round trip of a DeepSpeed-like tree, and corrupted/truncated files."""

import os
from pathlib import Path

import pytest
import torch

import support

pytest.importorskip("deepspeed")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

from nzdist.checkpoint import ChecksumError  # noqa: E402
from nzdist.deepspeed.checkpoint_engine import NzdistCheckpointEngine  # noqa: E402

HERE = Path(__file__).parent


def test_zero3_engine_save_load_bit_identical(tmp_path):
    proc = support.launch(
        HERE / "ds_worker.py",
        2,
        [str(tmp_path)],
        timeout=300,
        check=True,
        env={"DS_ACCELERATOR": "cpu", "NZDIST_NUM_THREADS": "1"},
    )
    assert "OK 4 files in nzdist format" in proc.stdout


def test_engine_round_trip_and_corruption(tmp_path):
    eng = NzdistCheckpointEngine()
    g = torch.Generator().manual_seed(0)
    tree = {
        "module": {"w": torch.randn(64, 64, generator=g).bfloat16(), "b": torch.randn(3)},
        "optimizer_state_dict": {"fp32_flat_groups": [torch.randn(5000, generator=g)], "step": 7},
        "ds_version": "0.19.8",
        "ints": torch.arange(1000),
        "pair": (1, torch.ones(100)),
    }
    path = tmp_path / "x.pt"
    eng.save(tree, str(path))
    got = eng.load(str(path))
    assert torch.equal(got["module"]["w"], tree["module"]["w"]) and got["module"]["w"].dtype == torch.bfloat16
    flat = "optimizer_state_dict", "fp32_flat_groups"
    assert torch.equal(got[flat[0]][flat[1]][0], tree[flat[0]][flat[1]][0])
    assert got["optimizer_state_dict"]["step"] == 7 and got["ds_version"] == "0.19.8"
    assert torch.equal(got["ints"], tree["ints"]) and torch.equal(got["pair"][1], tree["pair"][1])
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(raw)
    with pytest.raises(ChecksumError, match=r"x\.pt.*checksum"):
        eng.load(str(path))
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ChecksumError, match=r"x\.pt.*truncated"):
        eng.load(str(path))
    lossy = NzdistCheckpointEngine(codec="lossy", mantissa_bits=7, block_size=0)  # JSON-style options
    lossy.save({"w": tree["optimizer_state_dict"]["fp32_flat_groups"][0]}, str(tmp_path / "l.pt"))
    w = tree["optimizer_state_dict"]["fp32_flat_groups"][0]
    err = (lossy.load(str(tmp_path / "l.pt"))["w"] - w).abs() / w.abs()
    assert 0 < err.max() <= 2.0**-8
    with pytest.raises(ValueError, match="codec"):
        NzdistCheckpointEngine(codec="zip")
    plain = tmp_path / "plain.pt"  # files DeepSpeed's default engine wrote still load
    torch.save({"a": torch.ones(2)}, plain)
    assert torch.equal(eng.load(str(plain))["a"], torch.ones(2))

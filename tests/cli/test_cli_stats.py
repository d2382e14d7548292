"""nzdist stats: entropy numbers against an independent numpy computation, codec bits near the bound, JSON, errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import nzdist
from nzdist.cli import stats
from nzdist.cli.stats import split_entropy

# (bits, exponent bits, mantissa bits) per dtype
FORMATS = {torch.bfloat16: (16, 8, 7), torch.float16: (16, 5, 10), torch.float32: (32, 8, 23)}


def entropy_of(values: np.ndarray) -> float:
    _, counts = np.unique(values, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def reference(t: torch.Tensor) -> tuple[float, float, float]:
    """H(sign), H(exp), H(mantissa) by np.unique on the fields; mantissas over 16 bits as top bits + 2 bytes."""
    bits, e, m = FORMATS[t.dtype]
    u = t.reshape(-1).view({16: torch.int16, 32: torch.int32}[bits]).numpy().astype(np.int64) & ((1 << bits) - 1)
    sign, exp, mant = u >> (bits - 1), (u >> m) & ((1 << e) - 1), u & ((1 << m) - 1)
    h_mant = (
        entropy_of(mant)
        if m <= 16
        else (entropy_of(mant >> 16) + entropy_of((mant >> 8) & 0xFF) + entropy_of(mant & 0xFF))
    )
    return entropy_of(sign), entropy_of(exp), h_mant


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "big.bf16": (torch.randn(512, 512, generator=g) * 0.02).bfloat16(),
        # mostly positive: H(sign) well below 1 bit, which the bound must see
        "skewed.bf16": (torch.randn(40000, generator=g).abs() * 0.1 - 0.01).bfloat16(),
        "half": (torch.randn(300, 100, generator=g) * 0.5).half(),
        "master.fp32": torch.randn(64, 1000, generator=g) * 0.02,
        "constant": torch.ones(128, dtype=torch.bfloat16),
        "ids": torch.arange(100, dtype=torch.int64),
    }
    path = tmp_path_factory.mktemp("st") / "w.safetensors"
    save_file(tensors, str(path))
    return path, tensors


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_split_entropy_matches_numpy(dtype):
    g = torch.Generator().manual_seed(1)
    t = (torch.randn(20000, generator=g) * 0.03).to(dtype)
    t[:50] = torch.tensor([float("nan"), float("inf"), -0.0, 1e-40] * 12 + [0.0, -1.0]).to(dtype)
    h = split_entropy(t)
    assert (h.sign, h.exponent, h.mantissa) == pytest.approx(reference(t), abs=1e-9)
    assert h.bound == pytest.approx(sum(reference(t)), abs=1e-9)


def test_fp32_mantissa_entropy_is_not_capped_by_sample_size():
    # 4096 uniform mantissas: a 2^23-letter plug-in estimate would say <= 12 bits; they carry ~23.
    t = torch.from_numpy(np.random.default_rng(0).uniform(1.0, 2.0, 4096).astype(np.float32))
    assert split_entropy(t).mantissa > 22.0


def test_split_entropy_rejects_non_float():
    with pytest.raises(TypeError, match="int64"):
        split_entropy(torch.arange(10))


def test_stats_rows_json_and_bounds(weights_file, tmp_path, capsys):
    path, tensors = weights_file
    out = tmp_path / "s.json"
    assert stats.main([str(path), "--json", str(out), "--no-progress", "--lossy-mantissa-bits", "3"]) == 0
    printed = capsys.readouterr().out
    assert "TOTAL" in printed and "skipped ids (int64): not a float tensor" in printed

    doc = json.loads(out.read_text())
    rows = {r["tensor"]: r for r in doc["rows"]}
    assert set(rows) == set(tensors) - {"ids"}
    assert doc["skipped"] == [{"tensor": "ids", "dtype": "int64", "reason": "not a float tensor"}]
    for name, row in rows.items():
        t = tensors[name]
        assert row["dtype"] == str(t.dtype).removeprefix("torch.") and row["numel"] == t.numel()
        assert (row["H_sign"], row["H_exp"], row["H_mant"]) == pytest.approx(reference(t), abs=1e-9)
        assert row["nzdist"] == pytest.approx(nzdist.compress(t).bits_per_element)
        assert row["lossy"] < row["nzdist"]
    assert rows["skewed.bf16"]["H_sign"] < 0.6
    assert rows["constant"]["bound"] == 0.0 and rows["constant"]["over_bound_%"] is None
    # Large i.i.d. tensors: an order-0 coder cannot beat the split bound by more than the joint-coding gain, and
    # nzdist's chunk headers and tables cost little.
    for name in ("big.bf16", "master.fp32"):
        bound, bits = rows[name]["bound"], rows[name]["nzdist"]
        assert bound - 0.05 <= bits <= bound * 1.03, (name, bound, bits)

    total = doc["total"]
    n = sum(r["numel"] for r in rows.values())
    assert total["numel"] == n and total["dtype"] == "mixed"
    assert total["bound"] == pytest.approx(sum(r["bound"] * r["numel"] for r in rows.values()) / n)
    assert total["nzdist"] == pytest.approx(sum(r["nzdist"] * r["numel"] for r in rows.values()) / n)
    assert doc["settings"]["lossy"]["mantissa_bits"] == 3


def test_stats_dtype_cast(weights_file, tmp_path):
    path, tensors = weights_file
    out = tmp_path / "bf16.json"
    assert stats.main([str(path), "--dtype", "bf16", "--json", str(out), "--no-progress", "--summary"]) == 0
    rows = {r["tensor"]: r for r in json.loads(out.read_text())["rows"]}
    cast = tensors["master.fp32"].bfloat16()
    assert rows["master.fp32"]["dtype"] == "bfloat16"
    assert (
        rows["master.fp32"]["H_sign"],
        rows["master.fp32"]["H_exp"],
        rows["master.fp32"]["H_mant"],
    ) == pytest.approx(reference(cast), abs=1e-9)


def test_stats_bad_files(tmp_path, capsys):
    assert stats.main([str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    assert stats.main([str(junk)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err
    assert stats.main([str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err

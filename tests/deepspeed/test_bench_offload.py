"""`nzdist bench offload --engine deepspeed` at the smallest size: ZeRO-Offload dense vs nzdist on MiniLM's weights,
host parameter and optimizer bytes below dense, every loss bit-identical, table + JSON + PNG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

REPO = Path(__file__).resolve().parents[2]


def test_bench_offload_deepspeed_smoke(tmp_path):
    cmd = [sys.executable, "-m", "nzdist.cli", "bench", "offload", "--engine", "deepspeed", "--steps", "2"]
    cmd += ["--warmup", "1", "--out-dir", str(tmp_path)]
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    data = json.loads((tmp_path / "offload_deepspeed.json").read_text())
    rows = {r["run"]: r for r in data["rows"]}
    nz = rows["offload + nzdist"]
    assert all(r["losses_bit_identical"] is True for r in rows.values())
    assert 0 < nz["host_param_vs_dense"] < 0.75  # bf16 partitions, MiniLM's trained weights
    assert 0 < nz["host_optim_vs_dense"] < 1  # fp32 master + Adam moments, lossless
    assert rows["offload dense"]["host_optim_vs_dense"] == 1
    per_step = data["per_rank"][0][1]["host_per_step"]  # rank 0, the nzdist run: after every step
    assert len(per_step) == 3 and all(0 < s["host_optim_bytes"] for s in per_step)
    assert (tmp_path / "offload_deepspeed.png").stat().st_size > 1000

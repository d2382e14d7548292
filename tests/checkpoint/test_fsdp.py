"""FSDP2 (fully_shard, gloo CPU) state dicts saved by 2 ranks, loaded by 1 and by 4 ranks (resharding), full and
delta checkpoints, compared bit for bit with the unsharded reference states. Real torchrun processes."""

from pathlib import Path

import support

HERE = Path(__file__).parent


def _torchrun(nproc: int, *args: str) -> str:
    return support.launch(HERE / "fsdp_worker.py", nproc, list(args), timeout=180, check=True).stdout


def test_fsdp2_save_2_ranks_load_1_and_4(tmp_path):
    _torchrun(2, "save", str(tmp_path))
    for nproc in (1, 4):
        out = _torchrun(nproc, "load", str(tmp_path), "a", "b")  # a: full, b: delta against a
        assert f"OK world={nproc} a" in out and f"OK world={nproc} b" in out

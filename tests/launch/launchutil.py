"""Helpers for the launch tests: real subprocesses from the repository root, always with a timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import free_port  # noqa: F401  (re-exported for the launch tests)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
TINY = ["--d-model", "32", "--layers", "1", "--steps", "2", "--batch", "2"]  # the smallest job that still trains


def env(**extra) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(x for x in (REPO, e.get("PYTHONPATH")) if x)
    e.pop("RANK", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run(cmd: list[str], timeout: float, **extra_env) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=REPO, env=env(**extra_env), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(
            f"{cmd} did not finish in {timeout}s (hang?)\nstdout: {e.stdout}\nstderr: {e.stderr}"
        ) from e


def load_report(out_dir) -> dict:
    with open(os.path.join(out_dir, "report.json")) as f:
        return json.load(f)


def assert_runs_identical(results: dict, world: int, steps: int) -> None:
    """The two runs' losses match bit for bit on every rank, and training actually happened."""
    assert results["env"]["world_size"] == world
    assert results["identical"] == {**results["identical"], "losses": True, "params": True, "all": True}
    ranks = zip(results["runs"]["fsdp2"], results["runs"]["nzdist"])
    for plain, nz in ranks:
        assert len(plain["loss_hex"]) == steps
        assert plain["loss_hex"] == nz["loss_hex"]
        assert [float.fromhex(h) for h in plain["loss_hex"]] == plain["losses"]
        assert len(set(plain["losses"])) > 1  # the loss moved: the optimizer stepped

"""Shared by tests/deepspeed: how to start 2-rank CPU jobs (paths, environment, ports)."""

import os

from support import free_port  # noqa: F401  (re-exported for the DeepSpeed tests)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300  # seconds per launched job; a hang fails the test instead of the CI run


def cpu_env() -> dict:
    """DeepSpeed on CPU (gloo), one codec and OpenMP thread per rank: 2 ranks on a 2-core machine."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", NZDIST_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env

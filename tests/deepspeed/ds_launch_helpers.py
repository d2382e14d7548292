"""Shared by tests/deepspeed: how to start 2-rank CPU jobs (paths, environment, ports)."""

import os
import socket

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 300  # seconds per launched job; a hang fails the test instead of the CI run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env() -> dict:
    """DeepSpeed on CPU (gloo), one codec and OpenMP thread per rank: 2 ranks on a 2-core machine."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", NZDIST_NUM_THREADS="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env

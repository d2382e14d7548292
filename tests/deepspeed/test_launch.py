"""The training entry as users run it (torchrun, --backend fsdp) against the same config without "neuzip" in the
same process. Its DeepSpeed backend runs in every test_multiprocess job (worker.py calls train_deepspeed), and
launch/ds_train.sh starts the deepspeed-launcher job there."""

import json
import subprocess
import sys

import pytest

from ds_launch_helpers import ROOT, TIMEOUT, cpu_env, free_port


def _check(proc, out, steps):
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    assert "losses bit-identical to the dense baseline on every rank: True" in proc.stdout
    result = json.loads(out.read_text())
    assert len(result["ranks"]) == 2
    for dense, neuzip in result["ranks"]:
        assert len(dense["losses"]) == steps and dense["losses"] == neuzip["losses"]
        assert not dense["neuzip"] and neuzip["neuzip"]
        # nzdist.fsdp's own ratio targets are tested in tests/fsdp; here: compressed bytes did travel.
        assert 0 < neuzip["comm"]["payload_bytes"] < neuzip["comm"]["dense_bytes"]
    return result


def test_train_fsdp_backend_torchrun(tmp_path):
    pytest.importorskip("nzdist.fsdp")
    out = tmp_path / "fsdp.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "launch/train.py",
        "--backend",
        "fsdp",
        "--config",
        "configs/neuzip_zero.json",
        "--steps",
        "4",
        "--d-model",
        "64",
        "--compare-dense",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=TIMEOUT)
    result = _check(proc, out, 4)
    assert result["ranks"][0][1]["backend"] == "fsdp"


def test_ds_multinode_script_with_a_one_host_hostfile(tmp_path):
    # The --hostfile form end to end on one machine (no ssh here: DS_ARGS=--no_ssh_check).
    pytest.importorskip("deepspeed")
    (tmp_path / "hostfile").write_text("localhost slots=2\n")
    out = tmp_path / "multinode.json"
    env = dict(
        cpu_env(),
        HOSTFILE=str(tmp_path / "hostfile"),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        DS_ARGS="--no_ssh_check",
    )
    proc = subprocess.run(
        ["bash", "launch/ds_multinode.sh", "--steps", "3", "--d-model", "64", "--compare-dense", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    result = _check(proc, out, 3)
    assert result["ranks"][0][1]["backend"] == "deepspeed"

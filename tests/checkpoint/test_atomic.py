"""Atomic publication and verification: a SIGKILLed save leaves the previous checkpoint loadable; a corrupted or
truncated file raises an error that names the file."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nzdist.checkpoint as ckpt

HERE = Path(__file__).parent


def _kill_mid_save(target: Path, value: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "kill_worker.py"), str(target), str(value)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 60
        # Wait until the save has started writing data into its temporary directory, then kill it.
        while time.time() < deadline:
            datafiles = list(target.parent.glob(f".{target.name}.nzdist-tmp-*/__0_0.nzd"))
            if datafiles and datafiles[0].stat().st_size > 0:
                break
            if proc.poll() is not None:
                pytest.fail(f"save finished before it could be killed: {proc.stdout.read()} {proc.stderr.read()}")
            time.sleep(0.002)
        else:
            pytest.fail("save never started writing")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_save_keeps_previous_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    old = {f"t{i}": torch.full((1 << 20,), 1.0) for i in range(12)}
    ckpt.save(old, target)
    _kill_mid_save(target, 2.0)  # overwrite of the same path, killed while writing data
    got = {k: torch.zeros_like(v) for k, v in old.items()}
    ckpt.load(got, target)
    assert all(torch.equal(got[k], old[k]) for k in old)
    # A later save cleans up what the killed one left and succeeds.
    ckpt.save({"t0": torch.ones(3)}, target)
    assert not list(tmp_path.glob(".ckpt.nzdist-tmp-*"))

    fresh = tmp_path / "never"
    _kill_mid_save(fresh, 3.0)  # a first save killed: nothing at the path, and load says so
    assert not fresh.exists()
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load({"t0": torch.zeros(1 << 20)}, fresh)


@pytest.fixture
def saved(tmp_path):
    sd = {"w": torch.randn(4096).bfloat16(), "b": torch.randn(300), "i": torch.arange(10)}
    ckpt.save(sd, tmp_path / "c")
    return tmp_path / "c", sd


def _target(sd):
    return {k: torch.zeros_like(v) for k, v in sd.items()}


def test_flipped_byte_names_the_file(saved):
    path, sd = saved
    data = path / "__0_0.nzd"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    data.write_bytes(raw)
    with pytest.raises(ckpt.ChecksumError, match=r"__0_0\.nzd.*checksum"):
        ckpt.load(_target(sd), path)


def test_truncated_data_file_names_the_file(saved):
    path, sd = saved
    data = path / "__0_0.nzd"
    os.truncate(data, data.stat().st_size - 7)
    with pytest.raises(ckpt.ChecksumError, match=r"__0_0\.nzd.*truncated"):
        ckpt.load(_target(sd), path)


def test_corrupt_or_missing_metadata(saved):
    path, sd = saved
    meta = path / ".metadata"
    raw = bytearray(meta.read_bytes())
    raw[-3] ^= 1
    meta.write_bytes(raw)
    with pytest.raises(ckpt.ChecksumError, match=r"\.metadata.*checksum"):
        ckpt.load(_target(sd), path)
    meta.write_bytes(raw[:10])
    with pytest.raises(ckpt.ChecksumError, match=r"\.metadata.*truncated"):
        ckpt.load(_target(sd), path)
    meta.unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"\.metadata is missing"):
        ckpt.load(_target(sd), path)

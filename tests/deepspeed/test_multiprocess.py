"""ZeRO-3 with nzdist's compressed all-gather, 2 real ranks on CPU (gloo), under the `deepspeed` launcher and
under torchrun. Each launch trains several engines in one process (tests/deepspeed/worker.py); the tests here
assert on what every rank reported."""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from ds_launch_helpers import ROOT, TIMEOUT, cpu_env, free_port

WORKER = os.path.join(ROOT, "tests", "deepspeed", "worker.py")

pytest.importorskip("deepspeed")


def _test_config(tmp_path) -> str:
    """configs/neuzip_zero.json with DeepSpeed told to release every parameter after use and prefetch in
    small buckets, so forward and backward both gather, in buckets that mix compressed and dense parameters."""
    with open(os.path.join(ROOT, "configs", "neuzip_zero.json")) as f:
        cfg = json.load(f)
    cfg["zero_optimization"].update(
        stage3_max_live_parameters=0, stage3_max_reuse_distance=0, stage3_prefetch_bucket_size=20000
    )
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def _run(cmd, tmp_path, env=None) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        cmd + ["--out", str(out)],
        cwd=ROOT,
        env={**cpu_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    result = json.loads(out.read_text())
    assert result["world"] == 2
    return result["ranks"]


@pytest.fixture(scope="module")
def ds_launcher_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    # Through launch/ds_train.sh, so the script users run is what starts the DeepSpeed launcher here.
    env = {"NUM_GPUS": "2", "MASTER_PORT": str(free_port()), "CONFIG": _test_config(tmp), "SCRIPT": WORKER}
    cmd = [
        "bash",
        os.path.join(ROOT, "launch", "ds_train.sh"),
        "--scenario",
        "parity_ckpt",
        "--ckpt",
        str(tmp / "ckpt"),
    ]
    return _run(cmd, tmp, env)


@pytest.fixture(scope="module")
def torchrun_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchrun")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        WORKER,
        "--scenario",
        "parity_zeropp",
        "--config",
        _test_config(tmp),
        "--ckpt",
        str(tmp / "ckpt"),
    ]
    return _run(cmd, tmp)


def _assert_compressed(run) -> None:
    c = run["comm"]
    assert c["all_gathers"] > 0 and c["dense_bytes"] > 0, c
    assert c["payload_bytes"] < 0.75 * c["dense_bytes"], c


@pytest.mark.parametrize("launcher", ["deepspeed", "torchrun"])
def test_losses_bit_identical_to_dense(launcher, ds_launcher_ranks, torchrun_ranks):
    ranks = ds_launcher_ranks if launcher == "deepspeed" else torchrun_ranks
    for rank in ranks:
        dense, neuzip = rank["dense"]["losses"], rank["neuzip"]["losses"]
        assert len(dense) == 20 and all(math.isfinite(x) for x in dense)
        assert dense[-1] < dense[0]  # it trains
        assert neuzip == dense  # float equality of every loss = bit-identical training
        assert rank["dense"]["comm"]["all_gathers"] == 0  # the baseline is DeepSpeed's own gather
        _assert_compressed(rank["neuzip"])


def test_gather_path_makes_no_host_reads(torchrun_ranks):
    """Forward + backward read nothing back from nzdist code; the step reads once per parameter sub-group (the
    batched re-encode's sizes, all-gathered on the device) plus once for the gathers' error words -- at two
    depths, so the counts do not grow with the parameter count."""
    for rank in torchrun_ranks:
        runs = rank["host_reads"]
        assert runs["4"]["params"] > runs["2"]["params"]
        for depth, r in runs.items():
            assert r["fwd_bwd_host_reads"] == 0, (depth, r["fwd_bwd_sites"])
            assert r["fwd_bwd"]["host_syncs"] == 0 and r["fwd_bwd"]["encode_calls"] == 0, (depth, r)
            assert r["fwd_bwd"]["decode_calls"] > 0, (depth, r)
            assert r["step"]["encode_calls"] == r["sub_groups"], (depth, r)
            assert r["step"]["host_syncs"] <= r["sub_groups"] + 1, (depth, r)


def test_persistent_parameters_gathered_compressed(torchrun_ranks):
    for rank in torchrun_ranks:
        assert rank["persistent"]["losses"] == rank["dense"]["losses"]
        _assert_compressed(rank["persistent"])


def test_fp32_partitions(torchrun_ranks):
    for rank in torchrun_ranks:
        run = rank["fp32_neuzip"]
        assert run["losses"] == rank["fp32_dense"]["losses"] != rank["dense"]["losses"]
        c = run["comm"]
        assert 0 < c["payload_bytes"] < 0.9 * c["dense_bytes"]  # ~27 of 32 bits: the exponent compresses
        mem = run["memory"]
        # Here DeepSpeed keeps a separate fp32 "low-precision" copy beside the master, so it can be dropped;
        # where it aliases the master (fp32 autocast on GPU) nzdist reports why and keeps it.
        assert mem["released_bytes"] == mem["partition_bytes"] or mem["trainable_at_rest_unsupported"]


def test_checkpoint_round_trip_continues_identically(ds_launcher_ranks):
    for rank in ds_launcher_ranks:
        assert rank["neuzip"]["memory"]["trainable_at_rest"]  # the shipped config keeps partitions compressed
        assert rank["resumed"]["losses"] == rank["neuzip"]["losses"][10:]
        _assert_compressed(rank["resumed"])  # re-encoded after load, still compressed


def test_checkpoint_compress_wires_nzdist_checkpoint_engine(ds_launcher_ranks):
    for rank in ds_launcher_ranks:
        for run in ("neuzip", "resumed"):
            assert rank[run]["checkpoint_engine"] == "nzdist.deepspeed.checkpoint_engine.NzdistCheckpointEngine"


def test_partitions_compressed_at_rest(torchrun_ranks):
    for rank in torchrun_ranks:
        assert rank["neuzip"]["memory"]["released_bytes"] == 0  # compress_at_rest off: DeepSpeed's dense buffer
        at_rest = rank["frozen_at_rest"]
        assert at_rest["losses"] == rank["frozen_dense"]["losses"]
        assert rank["frozen_at_rest_resumed"]["losses"] == at_rest["losses"][10:]
        mem = at_rest["memory"]
        assert mem["trainable_at_rest"] and mem["trainable_at_rest_unsupported"] is None
        assert mem["released_bytes"] == mem["partition_bytes"]  # every compressed partition exists only as payload
        assert 0 < mem["at_rest_payload_bytes"] < 0.75 * mem["released_bytes"]
        # nzdist.memory_report(engine): on the CPU accelerator every byte is host memory
        assert mem["host_param_dense_bytes"] == mem["partition_bytes"]
        assert mem["host_param_bytes"] == mem["resident_bytes"] < mem["host_param_dense_bytes"]
        assert mem["host_optim_bytes"] == mem["host_optim_dense_bytes"] > 0  # fp32 master + Adam moments, dense
        _assert_compressed(at_rest)


def test_zero_offload_holds_host_partitions_compressed(torchrun_ranks):
    """offload_param + offload_optimizer to cpu: bit-identical to the same config without "neuzip", the host
    partitions exist only as payloads between steps, and a checkpoint saved under offload resumes exactly."""
    for rank in torchrun_ranks:
        run = rank["offload_neuzip"]
        assert run["losses"] == rank["offload_dense"]["losses"]
        assert rank["offload_resumed"]["losses"] == run["losses"][6:]
        mem = run["memory"]
        assert mem["trainable_at_rest"] and mem["trainable_at_rest_unsupported"] is None
        assert mem["released_bytes"] == mem["partition_bytes"] == mem["host_param_dense_bytes"]
        assert mem["host_param_bytes"] == mem["at_rest_payload_bytes"] < 0.75 * mem["host_param_dense_bytes"]
        assert mem["host_optim_bytes"] == mem["host_optim_dense_bytes"] > 0  # DeepSpeed's, kept dense
        _assert_compressed(run)


def test_zero_offload_holds_host_optimizer_state_compressed(torchrun_ranks):
    """compress_optimizer_state: the host fp32 master and Adam moments exist only as payloads between steps
    (decoded per sub-group for its update), losses and the final masters and moments are bit-identical to plain
    ZeRO-Offload, and a checkpoint saved under it resumes exactly."""
    for rank in torchrun_ranks:
        run, dense = rank["offload_state"], rank["offload_dense"]
        assert run["losses"] == dense["losses"]
        assert run["at_end"] == dense["at_end"] is not None  # sha256 of every full fp32 master and moment
        assert rank["offload_state_resumed"]["losses"] == run["losses"][6:]
        mem = run["memory"]
        assert 0 < mem["host_optim_bytes"] < 0.95 * mem["host_optim_dense_bytes"]
        assert mem["host_optim_dense_bytes"] == rank["offload_neuzip"]["memory"]["host_optim_dense_bytes"]
        assert mem["host_param_bytes"] < 0.75 * mem["host_param_dense_bytes"]
        _assert_compressed(run)


def test_partitions_rewritten_outside_a_step(torchrun_ranks):
    # GatheredParameters(modifier_rank=0) rewrites partitions (frozen and trainable, both kept at rest): the
    # payloads must follow, and training must go on exactly as DeepSpeed's own.
    for rank in torchrun_ranks:
        assert rank["edit_at_rest"]["losses"] == rank["edit_dense"]["losses"]
        assert len(rank["edit_dense"]["losses"]) == 6


def test_lossy_frozen_weights(torchrun_ranks):
    for rank in torchrun_ranks:
        lossy, dense, lossless = rank["frozen_lossy"], rank["frozen_dense"], rank["frozen_at_rest"]
        assert lossy["comm"]["ratio"] < lossless["comm"]["ratio"]  # 3 mantissa bits instead of 7
        assert lossy["losses"] != dense["losses"]  # the forward really used the lossy weights
        assert all(abs(a - b) < 0.25 for a, b in zip(lossy["losses"], dense["losses"]))
        # ...while blocking gathers (GatheredParameters: saves, user code) still see the exact weights.
        assert rank["lossy_blocking"] == {"exact": True, "checked": 13}  # embed + blocks.0 (12)


def test_zeropp_hpz_alongside(torchrun_ranks):
    for rank in torchrun_ranks:
        assert rank["hpz_neuzip"]["losses"] == rank["hpz_dense"]["losses"] == rank["dense"]["losses"]
        _assert_compressed(rank["hpz_neuzip"])
        # Gathers served from hpZ's secondary partitions stay DeepSpeed's (dense, intra-node).
        assert 0 < rank["hpz_neuzip"]["comm"]["all_gathers"] < rank["neuzip"]["comm"]["all_gathers"]

"""The README's main job, for real: `python -m nzdist.launch.main` -> torchrun, 2 ranks on gloo, both runs."""

from __future__ import annotations

import math
import os
import re

from launchutil import PY, assert_runs_identical, load_report, run


def test_main_job_two_ranks_identical_losses_and_report(tmp_path):
    out = tmp_path / "out"
    r = run([PY, "-m", "nzdist.launch.main", "--steps", "3", "--d-model", "64", "--out", str(out)], timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--nproc_per_node 2" in r.stdout and "nzdist.launch.compare" in r.stdout  # the launch line is shown
    assert "losses: IDENTICAL in every bit on every rank (2 ranks x 3 steps)" in r.stdout
    assert "final parameters: IDENTICAL" in r.stdout
    assert re.search(
        r"ratios nzdist/plain .*parameters 0\.\d+, optimizer state \d\.\d+, all-gather bytes \d\.\d+", r.stdout
    ), r.stdout
    assert "nzdist: 100%" in r.stderr and "fsdp2: 100%" in r.stderr  # a tqdm bar per run

    res = load_report(out)
    assert res["env"]["backend"] == "gloo" and res["preset"]["name"] == "tiny_cpu"
    assert_runs_identical(res, world=2, steps=3)
    ratios = res["ratios"]
    for key in (
        "param_bytes",
        "state_bytes",
        "all_gather_wire_bytes",
        "all_gather_payload_vs_dense",
        "median_step_time",
    ):
        assert math.isfinite(ratios[key]) and ratios[key] > 0, (key, ratios)
    assert ratios["param_bytes"] < 1 and ratios["all_gather_wire_bytes"] < 1  # the codec really compressed
    plain, nz = res["summary"]["fsdp2"], res["summary"]["nzdist"]
    assert plain["all_gathers"] == nz["all_gathers"] and min(plain["all_gathers"]) > 0  # same FSDP2 schedule
    for rank_rec in res["runs"]["nzdist"]:  # two independent counts of the same bytes agree
        assert rank_rec["wire"]["bytes"] == rank_rec["comm_stats"]["payload_bytes"]
    for rank_rec in res["runs"]["fsdp2"]:
        assert rank_rec["comm_stats"]["all_gathers"] == 0 and rank_rec["memory"]["compressed_params"] == 0
    with open(out / "report.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out / "report.png") > 10_000

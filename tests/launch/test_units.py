"""In-process pieces of the main job: the report's verdict and the spill-broadcast counter."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist

from nzdist.experiments import report
from nzdist.experiments.config import load_preset
from nzdist.experiments.counters import BroadcastCounter

from launchutil import free_port


def _record(losses, param_bytes):
    return {
        "losses": losses,
        "loss_hex": [v.hex() for v in losses],
        "step_times": [0.1] * len(losses),
        "wall_s": 1.0,
        "memory": {"param_bytes": param_bytes, "state_bytes": 2 * param_bytes},
        "comm_stats": {"payload_bytes": 60, "dense_bytes": 100, "all_gathers": 2},
        "wire": {"all_gathers": 2, "bytes": 60, "broadcasts": 0, "broadcast_bytes": 0},
    }


def test_report_says_differ_when_one_bit_differs(tmp_path):
    preset = load_preset("tiny_cpu", {"steps": 3}).as_dict()
    env = {"world_size": 2, "device": "cpu", "backend": "gloo", "torch": torch.__version__}
    base = [3.0, 2.5, 2.25]
    off = [3.0, 2.5, 2.25 + 2**-51]  # the last loss one ulp away
    ranks = [
        {"fsdp2": _record(base, 100), "nzdist": {**_record(base, 60), "params_differ": []}},
        {"fsdp2": _record(base, 100), "nzdist": {**_record(off, 60), "params_differ": ["head.weight"]}},
    ]
    res = report.build_results(preset, env, ranks)
    assert res["identical"]["losses"] is False and res["identical"]["params"] is False
    assert res["identical"]["loss_mismatches"][0][:2] == (1, 2)
    text = report.format_report(res)
    assert "losses: DIFFER" in text and "rank 1 step 2" in text and "head.weight" in text
    assert res["ratios"]["param_bytes"] == pytest.approx(0.6)
    paths = report.save(res, str(tmp_path))
    assert json.load(open(paths["json"]))["identical"]["all"] is False
    ranks[1]["nzdist"] = {**_record(base, 60), "params_differ": []}
    assert report.build_results(preset, env, ranks)["identical"]["all"] is True


def test_broadcast_counter_counts_while_active_and_restores(monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    original = dist.broadcast
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        with BroadcastCounter() as counter:
            dist.broadcast(torch.zeros(10, dtype=torch.bfloat16), src=0)
            dist.broadcast(torch.zeros(3, dtype=torch.float32), src=0)
        dist.broadcast(torch.zeros(99), src=0)  # after the block: not counted
    finally:
        dist.destroy_process_group()
    assert (counter.calls, counter.bytes) == (2, 10 * 2 + 3 * 4)
    assert dist.broadcast is original

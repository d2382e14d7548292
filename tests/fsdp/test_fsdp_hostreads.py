"""The FSDP2 data path makes no host read after a parameter's first all-gather (2 real gloo ranks).

A GPU stalls the CPU on every host read of device memory, and FSDP2 overlaps the next all-gather with compute only
while the CPU runs ahead. On the CPU nothing stalls, so this counts the reads that would: support.HostReads during
forward + backward, and nzdist.codec_stats for the optimizer step, at two model depths -- the counts must not grow
with the number of parameters.
"""

from __future__ import annotations

from pathlib import Path

import support

SCRIPT = Path(__file__).parent / "scripts" / "hostreads.py"


def test_no_host_reads_per_all_gather_and_two_syncs_per_step(tmp_path):
    r = support.torchrun(SCRIPT, 2, [], tmp_path, timeout=420)
    for rank in r["ranks"]:
        cases = rank["cases"]
        assert set(cases) == {"bf16_2", "bf16_6", "mp_2", "mp_6"}
        for name, c in cases.items():
            assert c["loss_finite"], name
            assert c["fwd_bwd_host_reads"] == 0, f"{name}: host reads in forward/backward: {c['fwd_bwd_sites']}"
            assert c["fwd_bwd"]["host_syncs"] == 0 and c["fwd_bwd"]["encode_calls"] == 0, (name, c["fwd_bwd"])
            # one decode per parameter per all-gather (backward re-gathers: reshard_after_forward)
            assert 0 < c["fwd_bwd"]["decode_calls"] <= c["param_all_gathers"], (name, c)
            assert c["param_all_gathers"] > c["compressed_params"], name
            # the step: one batched decode (parameters and Adam moments), one batched encode, two reads
            assert c["step"] == {"decode_calls": 1, "encode_calls": 1, "host_syncs": 2}, (name, c["step"])
        assert cases["bf16_6"]["compressed_params"] > 2 * cases["bf16_2"]["compressed_params"]
    assert r["returncode"] == 0, r["stderr_tail"]

"""Hugging Face Trainer with DeepSpeed ZeRO-3 through ``nzdist.deepspeed.patch_deepspeed()``, against the same
Trainer run without the ``"neuzip"`` section, bit for bit (2 real ranks, DS_ACCELERATOR=cpu, gloo)."""

from __future__ import annotations

from pathlib import Path

import pytest

import support

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("deepspeed")

SCRIPT = Path(__file__).parent / "trainer_worker.py"


def test_trainer_deepspeed_zero3_is_bit_identical(tmp_path):
    """Llama with Trainer's AdamW (fp32) and GPT-2 with DeepSpeed's AdamW (bf16), tied embeddings, weight decay
    and gradient clipping: losses and final full parameters equal to plain ZeRO-3; partitions held compressed."""
    r = support.torchrun(SCRIPT, 2, [], tmp_path, timeout=900, env={"DS_ACCELERATOR": "cpu", "NZDIST_NUM_THREADS": "1"})
    assert r["returncode"] == 0, r["stderr_tail"]
    for rank in r["ranks"]:
        assert set(rank["cases"]) == {"llama_trainer_optim", "gpt2_ds_optim_bf16"}
        for name, c in rank["cases"].items():
            assert c["nz"]["nzdist"] and not c["plain"]["nzdist"], f"{name}: the engine was not built by nzdist"
            report = c["nz"]["report"]
            assert report["params"] > 0 and report["payload_bytes"] < report["partition_bytes"], name
            assert c["losses_equal"], f"{name}: {c['plain_losses']} vs {c['nz_losses']}"
            assert c["params_differ"] == [], f"{name}: final parameters differ: {c['params_differ']}"
        bf16 = rank["cases"]["gpt2_ds_optim_bf16"]["nz"]["report"]
        assert bf16["payload_bytes"] <= 0.8 * bf16["partition_bytes"]  # bf16 random init: about 0.7x

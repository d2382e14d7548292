"""Hugging Face Trainer with FSDP2 after ``nzdist.fsdp.convert(model)``, against the plain Trainer run, bit for bit.

The real client path: accelerate's ``fsdp2_prepare_model`` shards the model and remaps the optimizer's
parameters by ``data_ptr()``. Every shard used to report ``data_ptr() == 0``, so all optimizer parameters were
mapped onto one (lm_head) and every other update was lost; the parity tests that called fully_shard themselves
never saw it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import support

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

SCRIPT = Path(__file__).parent / "scripts" / "trainer.py"
CASES = {"llama_adamw", "llama_sgd", "gpt2_adamw", "gpt2_sgd", "llama_adamw_bf16"}


def test_trainer_fsdp2_convert_is_bit_identical(tmp_path):
    """Llama and GPT-2 (tied embeddings), Trainer's default AdamW and SGD, weight decay and gradient clipping on,
    fp32 and bf16 mixed precision, 2 ranks: losses and final full parameters equal to plain Trainer in every bit."""
    r = support.torchrun(SCRIPT, 2, sorted(CASES), tmp_path, timeout=900)
    assert r["returncode"] == 0, r["stderr_tail"]
    for rank in r["ranks"]:
        assert set(rank["cases"]) == CASES
        for name, c in rank["cases"].items():
            assert c["nz"]["compressed_params"] == c["nz"]["model_params"] > 0, name
            assert c["nz"]["fsdp_modules"] == c["plain"]["fsdp_modules"] > 1, name  # really sharded by accelerate
            assert c["nz"]["optimizer_holds_each_param_once"], f"{name}: optimizer lost its parameters"
            assert c["nz"]["tied"] and c["plain"]["tied"], f"{name}: tied embeddings came apart"
            assert c["losses_equal"], f"{name}: {c['plain_losses']} vs {c['nz_losses']}"
            assert c["params_differ"] == [], f"{name}: final parameters differ: {c['params_differ']}"
            # every parameter moved in the plain run, so bit equality means no update was lost
            assert c["params_unchanged"] == [], name

"""torchrun helper: Hugging Face ``Trainer`` with FSDP2, plain vs ``nzdist.fsdp.convert(model)`` first.

    torchrun --nproc_per_node 2 trainer.py llama_adamw gpt2_sgd ...

The user's path, run for real: ``TrainingArguments(fsdp="full_shard auto_wrap", fsdp_config={"fsdp_version": 2})``
so that accelerate's ``fsdp2_prepare_model`` shards the model (bottom-up, then the tied-embedding list, then the
root) and ``fsdp2_switch_optimizer_parameters`` remaps the optimizer's parameters by ``data_ptr()``. accelerate
enables FSDP only on GPU-like devices and silently falls back to DDP on CPU, so after building the Trainer we set
the FSDP distributed type and plugin ourselves (what accelerate would have set on a GPU).

Writes {case: {...}} to $NZ_RESULT (rank 0): losses of both runs (float.hex) and the names of final full
parameters whose bits differ.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch

import nzdist.fsdp as nzfsdp

from common import full_params, init
from support import TokenData, emit, end_worker, same_bits, tiny_gpt2, tiny_llama

STEPS = 6


def llama():
    return tiny_llama(tied=True), "LlamaDecoderLayer"


def gpt2():
    return tiny_gpt2(), "GPT2Block"


# case: (model builder, Trainer optim name, bf16 mixed precision)
CASES = {
    "llama_adamw": (llama, "adamw_torch", False),  # Trainer's default optimizer
    "llama_sgd": (llama, "sgd", False),
    "gpt2_adamw": (gpt2, "adamw_torch", False),
    "gpt2_sgd": (gpt2, "sgd", False),
    # bf16=True: accelerate builds a MixedPrecisionPolicy(param_dtype=bf16) and keeps fp32 master shards
    "llama_adamw_bf16": (llama, "adamw_torch", True),
}


def force_fsdp2(trainer, args) -> None:
    """What accelerate sets up on a GPU: the FSDP distributed type and its plugin (it turns FSDP into DDP on CPU)."""
    from accelerate import FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    trainer.accelerator.state.distributed_type = DistributedType.FSDP
    trainer.accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    trainer.is_fsdp_enabled = True


def run(case: str, nz: bool, out_dir: str) -> tuple[list[str], dict, dict]:
    from transformers import Trainer, TrainingArguments, set_seed

    build, optim, bf16 = CASES[case]
    set_seed(0)
    model, layer_cls = build()
    if nz:
        nzfsdp.convert(model)
    args = TrainingArguments(
        output_dir=out_dir,
        max_steps=STEPS,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        weight_decay=0.1,
        max_grad_norm=1.0,
        optim=optim,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        bf16=bf16,
        fsdp="full_shard auto_wrap",
        fsdp_config={"fsdp_version": 2, "transformer_layer_cls_to_wrap": [layer_cls]},
    )
    trainer = Trainer(model=model, args=args, train_dataset=TokenData())
    force_fsdp2(trainer, args)
    trainer.train()
    losses = [float(h["loss"]).hex() for h in trainer.state.log_history if "loss" in h]
    wrapped = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    from torch.distributed.fsdp import FSDPModule

    stats = {
        "fsdp_modules": sum(isinstance(m, FSDPModule) for m in wrapped.modules()),
        "compressed_params": len(nzfsdp.compressed_shards(wrapped)),
        # accelerate remaps the optimizer onto the sharded parameters: it must hold each of them exactly once
        "optimizer_holds_each_param_once": sorted(id(p) for g in trainer.optimizer.param_groups for p in g["params"])
        == sorted(id(p) for p in wrapped.parameters()),
        "model_params": len(list(wrapped.parameters())),
        "param_dtypes": sorted({str(p.dtype) for p in wrapped.parameters()}),
        "tied": _tied(wrapped),
    }
    return losses, full_params(wrapped), stats


def _tied(model) -> bool:
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    return emb is head


def main(argv):
    init()
    cases = argv or list(CASES)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            plain_losses, plain_params, plain_stats = run(case, False, os.path.join(tmp, f"{case}.plain"))
            nz_losses, nz_params, nz_stats = run(case, True, os.path.join(tmp, f"{case}.nz"))
            results[case] = {
                "plain_losses": plain_losses,
                "nz_losses": nz_losses,
                "losses_equal": plain_losses == nz_losses and len(plain_losses) == STEPS,
                "params_differ": same_bits(plain_params, nz_params),
                "params_unchanged": sorted(k for k in plain_params if torch.equal(plain_params[k], _initial(case)[k])),
                "plain": plain_stats,
                "nz": nz_stats,
            }
    ok = all(r["losses_equal"] and not r["params_differ"] for r in results.values())
    emit({"cases": results, "ok": ok})
    return 0 if ok else 1


_INITIAL: dict = {}


def _initial(case: str) -> dict:
    """The model's parameters before training (same seed), to show every parameter really moved."""
    if case not in _INITIAL:
        from transformers import set_seed

        set_seed(0)
        model, _ = CASES[case][0]()
        _INITIAL[case] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return _INITIAL[case]


if __name__ == "__main__":
    end_worker(main(sys.argv[1:]))  # after main: its engines and models hold the process group too

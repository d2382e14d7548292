"""torchrun helper (DS_ACCELERATOR=cpu): Hugging Face ``Trainer`` with DeepSpeed ZeRO-3, plain vs nzdist.

    torchrun --nproc_per_node 2 trainer_worker.py llama_trainer_optim gpt2_ds_optim ...

The user's path: ``nzdist.deepspeed.patch_deepspeed()`` once, then ``TrainingArguments(deepspeed=config)`` with a
``"neuzip"`` section in the config; accelerate looks ``deepspeed.initialize`` up at call time and so builds the
engine through nzdist. The plain run uses the same config without the section. Writes {case: {...}} to
$NZ_RESULT (rank 0): losses (float.hex), the names of final full parameters whose bits differ, and what the
nzdist engine held.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile

import torch.distributed as dist

from support import TokenData, emit, end_worker, same_bits, tiny_gpt2, tiny_llama

STEPS = 5

BASE = {
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 1000000,
    "zero_allow_untested_optimizer": True,
    "zero_optimization": {
        "stage": 3,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "stage3_param_persistence_threshold": 0,
        "reduce_bucket_size": 500000,
        "stage3_prefetch_bucket_size": 200000,
    },
}
DS_OPTIMIZER = {
    "type": "AdamW",
    "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto", "torch_adam": True},
}
NEUZIP = {"codec": "lossless", "params": "all", "min_numel": 256, "stats": True, "compress_at_rest": True}


# case: (model builder, optimizer from the DeepSpeed config (True) or Trainer's default AdamW (False), bf16)
CASES = {"llama_trainer_optim": (tiny_llama, False, False), "gpt2_ds_optim_bf16": (tiny_gpt2, True, True)}


def full_params(engine) -> dict:
    import deepspeed

    out = {}
    for name, p in engine.module.named_parameters():
        with deepspeed.zero.GatheredParameters([p]):
            out[name] = p.detach().clone()
    return out


def run(case: str, nz: bool, out_dir: str):
    from transformers import Trainer, TrainingArguments, set_seed

    build, ds_optim, bf16 = CASES[case]
    config = copy.deepcopy(BASE)
    if ds_optim:
        config["optimizer"] = copy.deepcopy(DS_OPTIMIZER)
    if bf16:
        config["bf16"] = {"enabled": "auto"}  # bf16 partitions; the fp32 master lives in the optimizer
    if nz:
        config["neuzip"] = dict(NEUZIP)
    set_seed(0)
    model = build()
    args = TrainingArguments(
        output_dir=out_dir,
        max_steps=STEPS,
        per_device_train_batch_size=2,
        learning_rate=5e-3,
        weight_decay=0.1,
        max_grad_norm=1.0,
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
        deepspeed=config,
    )
    trainer = Trainer(model=model, args=args, train_dataset=TokenData())
    trainer.train()
    engine = trainer.model_wrapped
    losses = [float(h["loss"]).hex() for h in trainer.state.log_history if "loss" in h]
    stats = {"engine": type(engine).__name__, "nzdist": hasattr(engine, "neuzip")}
    if stats["nzdist"]:
        import nzdist

        report = nzdist.memory_report(engine)
        report = report.as_dict() if hasattr(report, "as_dict") else dict(report)
        stats["report"] = {k: v for k, v in report.items() if isinstance(v, (int, float))}
    params = full_params(engine)
    engine.destroy() if hasattr(engine, "destroy") else None
    return losses, params, stats


def main(argv):
    import nzdist.deepspeed

    dist.init_process_group("gloo")
    nzdist.deepspeed.patch_deepspeed()  # the one call a Trainer user adds
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
                "plain": plain_stats,
                "nz": nz_stats,
            }
    ok = all(r["losses_equal"] and not r["params_differ"] for r in results.values())
    emit({"cases": results, "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    end_worker(main(sys.argv[1:]))  # after main: its engines and models hold the process group too

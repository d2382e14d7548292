"""Hugging Face models for the experiments that shard real architectures by their own layer classes (``nzdist
bench fsdp``): MiniLM with its trained weights, and small randomly initialised GPT-2 and Llama causal LMs.
``transformers`` is imported only when a model is built.
"""

from __future__ import annotations

import torch.nn.functional as F

HF_MODELS = ("minilm", "gpt", "gpt-100m", "llama")


def hf_model(name: str):
    """``(model, layer class, vocabulary, loss_fn(model, ids))`` for ``name`` in :data:`HF_MODELS`: ``minilm`` holds
    MiniLM-L6's trained weights (loss: mean square of the last hidden state), ``gpt``/``llama`` are 4-layer
    causal LMs of width 256, ``gpt-100m`` a 12-layer GPT-2 of width 768 (110M parameters with its untied 16384-token
    embedding and head), all randomly initialised (loss: next-token cross entropy)."""
    if name == "minilm":
        from transformers.models.bert.modeling_bert import BertLayer

        from .weights import minilm_bert

        model = minilm_bert()
        return (
            model,
            BertLayer,
            model.config.vocab_size,
            lambda m, ids: m(input_ids=ids).last_hidden_state.float().pow(2).mean(),
        )
    if name == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        cfg = LlamaConfig(
            vocab_size=8192,
            hidden_size=256,
            intermediate_size=688,
            num_hidden_layers=4,
            num_attention_heads=8,
            num_key_value_heads=4,
            max_position_embeddings=512,
        )
        layer = LlamaDecoderLayer
        model = LlamaForCausalLM(cfg)
    elif name in ("gpt", "gpt-100m"):
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.models.gpt2.modeling_gpt2 import GPT2Block

        big = name == "gpt-100m"
        cfg = GPT2Config(
            vocab_size=16384 if big else 8192,
            n_positions=512,
            n_embd=768 if big else 256,
            n_layer=12 if big else 4,
            n_head=12 if big else 8,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=False,
            bos_token_id=0,  # GPT-2's 50256 lies outside these vocabularies
            eos_token_id=0,
        )
        layer = GPT2Block
        model = GPT2LMHeadModel(cfg)
    else:
        raise ValueError(f"unknown model {name!r}; expected one of {HF_MODELS}")

    def loss_fn(m, ids):
        logits = m(input_ids=ids).logits.float()
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    return model, layer, cfg.vocab_size, loss_fn

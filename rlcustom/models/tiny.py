"""Tiny random-initialised Llama-style models for tests: seconds, not minutes.

They use the SmolLM2 tokenizer (so prompts, chat templates and EOS behave as
with the real model) over a 2-layer, narrow network.
"""
from __future__ import annotations

from pathlib import Path

import torch

from rlcustom.models.embedded import embedded_tokenizer_dir


# heads=2 of width 64 -> head size 32, the smallest vLLM's CPU attention kernel accepts.
def tiny_config(vocab_size: int = 49152, *, layers: int = 2, hidden: int = 64, heads: int = 2,
                kv_heads: int = 1, intermediate: int = 128, max_positions: int = 1024, **kw):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, **kw,
    )


def tiny_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_llama(seed: int = 0, eos_logit: float | None = None, **kw):
    """(model, tokenizer): a seeded random tiny Llama with the SmolLM2 tokenizer.

    A random model almost never samples EOS (1 in 49k). ``eos_logit`` makes
    stopping reachable: the EOS embedding (tied to the LM head) is aligned with
    the mean final hidden state so its logit is about ``eos_logit`` (6 gives a
    mean length of ~12 of 16 tokens), which gives length rewards and
    constraints a signal to learn from.
    """
    from transformers import LlamaForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(len(tok), **kw)).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    if eos_logit is not None:
        g = torch.Generator().manual_seed(seed)
        probe = torch.randint(0, len(tok), (8, 32), generator=g)
        with torch.no_grad():
            h = model.model(input_ids=probe).last_hidden_state.reshape(-1, model.config.hidden_size).mean(0)
            model.model.embed_tokens.weight[tok.eos_token_id] = eos_logit * h / h.norm() ** 2
    return model, tok


def save_tiny(path: str | Path, seed: int = 0, eos_logit: float | None = None, **kw) -> Path:
    """Write a tiny model as an HF directory (safetensors + tokenizer), e.g. for vLLM."""
    path = Path(path)
    model, tok = tiny_llama(seed, eos_logit=eos_logit, **kw)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path

"""Resolve a model name (alias, local directory, hub id) and load it safely.

Safe by default: safetensors weights, ``trust_remote_code`` only when asked,
and never a download at run time (hub ids must already be in the local cache).
"""
from __future__ import annotations

from pathlib import Path

import torch

from rlcustom.errors import ModelLoadError
from rlcustom.models.embedded import EMBEDDED, prepare_embedded

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name: str | Path) -> Path:
    """Alias -> prepared cache dir; local dir -> itself; hub id -> local cache or one-line error."""
    name = str(name)
    if name in EMBEDDED:
        return prepare_embedded(name)
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"{p}: not a model directory (no config.json)")
        return p
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelLoadError(f"{name}: no such model directory (aliases: {', '.join(EMBEDDED)})")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:
        raise ModelLoadError(
            f"{name}: not an alias or local directory, and not in the local hub cache; "
            "this machine does not download models at run time: download it elsewhere and pass its directory"
        ) from None


def load_tokenizer(name: str | Path, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_causal_lm(name: str | Path, *, dtype: str = "float32", trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot load model: {str(e).splitlines()[0]}") from None
    model.eval()
    return model

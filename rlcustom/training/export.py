"""Standalone artefacts for the next stage: a merged transformers directory, a reward-model directory,
or a peft LoRA adapter (what vLLM's ``LoRARequest`` reads)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rlcustom.training.weights import adapter_state, gathered, named_weights

if TYPE_CHECKING:
    from rlcustom.config import ModelConfig
    from rlcustom.training.engine import TrainingEngine


def export_model(te: "TrainingEngine", model_cfg: "ModelConfig", path: str, *, lora: bool,
                 model_kind: str = "causal_lm") -> str:
    """Rank 0 writes ``path``; every rank calls under ZeRO-3 (the parameters are gathered).

    Causal LMs: a transformers directory (LoRA merged into the base) + tokenizer, loadable as
    ``model.path``. Reward models: a :class:`RewardModel` directory for ``reward.spec: model``.
    """
    from rlcustom.models.loading import load_tokenizer

    tok = load_tokenizer(model_cfg.path, trust_remote_code=model_cfg.trust_remote_code)
    if model_kind == "reward":
        with gathered(te.zero_stage, list(te.module.parameters())):
            if te.rank == 0:
                te.module.save(path, tokenizer=tok)
        return path
    named = named_weights(te, lora, adapter_only=False)  # merged under plain HF names (gathered for ZeRO-3)
    if te.rank == 0:
        from rlcustom.models.loading import load_causal_lm

        base = load_causal_lm(model_cfg.path, dtype=model_cfg.dtype, trust_remote_code=model_cfg.trust_remote_code)
        base.load_state_dict(dict(named), strict=False)
        base.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
    return path


def save_adapter(te: "TrainingEngine", path: str) -> str:
    """Write the LoRA adapter with peft's ``save_pretrained``."""
    te.module.save_pretrained(path, state_dict=adapter_state(te, cpu=True), safe_serialization=True)
    return str(path)

"""The module a learner trains: a causal LM (optionally wrapped in a LoRA adapter) or a reward model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # the config dataclasses, for annotations only (training does not import config)
    from rlcustom.config import ModelConfig



def build_learner_module(model: ModelConfig, *, model_kind: Literal["causal_lm", "reward"] = "causal_lm",
                         num_layers: int | None = None, seed: int = 0, rank: int = 0,
                         value_head: bool = False) -> torch.nn.Module:
    """Load ``model.path``; every rank creates the same LoRA init (seeded before the adapter). ``value_head``
    attaches a shared critic's zero-initialised head (:mod:`rlcustom.models.value_head`)."""
    from rlcustom.models.loading import load_causal_lm

    lora = model.lora
    if model_kind == "reward":  # a Bradley-Terry reward model: LM backbone + scalar head
        from rlcustom.models.heads import RewardModel

        if lora is not None:
            raise ValueError("model_kind='reward' trains the full backbone and head; unset model.lora")
        module = RewardModel.from_pretrained(model.path, dtype=model.dtype, num_layers=num_layers,
                                             trust_remote_code=model.trust_remote_code)
    else:
        module = load_causal_lm(model.path, dtype=model.dtype, trust_remote_code=model.trust_remote_code)
    if lora is not None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        torch.manual_seed(seed)
        pcfg = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                              target_modules=list(lora.target_modules), bias="none", task_type="CAUSAL_LM")
        module = get_peft_model(module, pcfg)
        torch.manual_seed(seed + rank)
    else:
        for p in module.parameters():
            p.requires_grad_(True)
    if value_head:
        if model_kind != "causal_lm":
            raise ValueError("a shared value head needs a causal LM learner")
        from rlcustom.models.value_head import add_value_head

        add_value_head(module)
    if not any(p.requires_grad for p in module.parameters()):
        raise ValueError(f"{model.path}: no trainable parameters")
    return module

"""PPO's policy and value losses from one forward of the policy's backbone (``algo.critic: shared``).

``policy_value`` runs :func:`rlcustom.models.value_head.response_logits_and_values` once, hands the
logits to the configured policy objective (``ppo_clip``, ``policy_clip``: their math unchanged) and the
values to PPO's clipped value loss (:func:`rlcustom.algos.ppo.ppo_value_loss`,
``0.5 * max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)`` token mean); the loss is
``L_policy + vf_coef * L_value`` (Schulman et al. 2017, Eq. 9, without the entropy term, which the
policy objective adds itself when ``entropy_coef > 0``). One backward trains the policy, the shared
backbone (or its LoRA adapter) and the value head.
"""
from __future__ import annotations

from typing import Any

import torch

from rlcustom.algos.ppo import ppo_value_loss
from rlcustom.models.forward import LOGITS
from rlcustom.models.value_head import response_logits_and_values
from rlcustom.registry import OBJECTIVES


@OBJECTIVES.register("policy_value")
def policy_value(model, batch: dict, *, policy: str = "ppo_clip", vf_coef: float = 0.5,
                 value_clip_eps: float | None = 0.2, **policy_kwargs: Any) -> tuple[torch.Tensor, dict]:
    """``policy``'s loss + ``vf_coef`` x the clipped value loss against ``returns`` around ``old_values``."""
    logits, values = response_logits_and_values(model, batch)
    ploss, stats = OBJECTIVES.get(policy)(model, batch | {LOGITS: logits}, **policy_kwargs)
    mask = batch["response_mask"].to(values)
    vloss, vst = ppo_value_loss(values, batch["old_values"].to(values), batch["returns"].to(values), mask,
                                clip_eps=value_clip_eps)
    stats = stats | {"value/" + k.removeprefix("value_"): float(v) for k, v in vst.items()}  # value/loss, ...
    return ploss + vf_coef * vloss, stats

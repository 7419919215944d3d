"""The critic's objectives, registered in :data:`rlcustom.registry.OBJECTIVES` (they run a value model's forward).

Targets come from ``batch["returns"]`` or ``batch["targets"]`` [B, T]; values are
:func:`rlcustom.models.heads.response_values` (``V(x, y_<t)`` for response token ``t``).

* ``"value_mse"``: ``sum_valid (V - R)^2 / #valid`` (token mean over ``response_mask``,
  no 1/2; :func:`rlcustom.algos.td_lambda.value_mse_loss`);
* ``"value_clip"``: ``0.5 * max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2)``
  token mean, with ``V_old = batch["old_values"]`` and ``eps = clip_eps`` (0.2); without
  ``old_values`` it is ``0.5 * (V - R)^2`` (:func:`rlcustom.algos.ppo.ppo_value_loss`).
"""
from __future__ import annotations

import torch

from rlcustom.algos.ppo import ppo_value_loss
from rlcustom.algos.td_lambda import value_mse_loss
from rlcustom.models.heads import response_values
from rlcustom.registry import register_objective


def _targets(batch: dict) -> torch.Tensor:
    for key in ("returns", "targets"):
        if key in batch and batch[key] is not None:
            return batch[key]
    raise KeyError("value objective: the batch needs 'returns' or 'targets' [B, T]")


def _floats(stats: dict, prefix: str = "value/") -> dict[str, float]:
    return {prefix + k.removeprefix("value_"): float(v) for k, v in stats.items()}


@register_objective("value_mse", loss=value_mse_loss)
def value_mse(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Token-mean squared error of V(s_t) against ``returns``/``targets`` over ``response_mask``."""
    v = response_values(model, batch)
    loss, stats = value_mse_loss(v, _targets(batch).to(v), batch["response_mask"].to(v))
    return loss, _floats(stats)


@register_objective("value_clip", loss=ppo_value_loss)
def value_clip(model, batch: dict, clip_eps: float = 0.2) -> tuple[torch.Tensor, dict]:
    """PPO's clipped value loss around ``old_values`` (plain ``0.5 * MSE`` when the batch has none)."""
    v = response_values(model, batch)
    mask = batch["response_mask"].to(v)
    old = batch.get("old_values")
    if old is None:
        loss, stats = ppo_value_loss(v, v.detach(), _targets(batch).to(v), mask, clip_eps=None)
    else:
        loss, stats = ppo_value_loss(v, old.to(v), _targets(batch).to(v), mask, clip_eps=clip_eps)
    return loss, _floats(stats)

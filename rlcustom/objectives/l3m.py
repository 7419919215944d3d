"""Learner objective of the L3M constraint step (and of the min-max baseline's constraint step).

Registered into :data:`~rlcustom.registry.OBJECTIVES` when :mod:`rlcustom.objectives` is imported
(every learner process does).

``l3m_constraint`` is the policy-gradient part of L3M Eq. (11),

    (mu/k) sum_i dC_i / max(-C_i, mu^2) = sum_i w_i dC_i,
    dC_i = E[(b_i - r_i(y|x)) d lbar_theta(y|x)]                       (Eq. 12)

with length-normalised log-likelihoods ``lbar = log pi(y|x) / |y|`` (Section 5.3). The
trainer computes the weights ``w_i`` (barrier weights at the EMA of ``C_i`` for L3M,
the multipliers ``lambda_i`` for the min-max baseline, whose Lagrangian gradient
``sum_i lambda_i dC_i`` has the same form, Eq. 8) and passes them with the bounds;
the batch carries the signed constraint rewards ``constraint_rewards`` [B, k].
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from rlcustom.algos.l3m import l3m_constraint_loss
from rlcustom.models.forward import response_logprobs
from rlcustom.registry import register_objective


def normalised_seq_logprobs(lp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, T] -> [B]``: ``sum_t log pi(y_t|...) / |y|`` (an empty response counts as length 1)."""
    return (lp * mask).sum(-1) / mask.sum(-1).clamp(min=1)


@register_objective("l3m_constraint", loss=l3m_constraint_loss)
def l3m_constraint(model, batch: dict, *, bounds: Sequence[float], weights: Sequence[float],
                   loo_baseline: bool = False, **_) -> tuple[torch.Tensor, dict]:
    """REINFORCE surrogate of ``sum_i w_i dC_i`` (L3M Eqs. 11-12) on length-normalised log-likelihoods.

    ``batch["constraint_rewards"]`` [B, k]: ``r_i(y_b|x_b)`` already signed (``sign * r >= b``);
    ``bounds``/``weights``: ``[k]`` lists. ``loo_baseline`` subtracts a leave-one-out mean of the
    per-sample coefficient within the micro-batch (not in the paper; default off).
    """
    mask = batch["response_mask"]
    lbar = normalised_seq_logprobs(response_logprobs(model, batch), mask)
    rewards = batch["constraint_rewards"].to(lbar.dtype)
    loss = l3m_constraint_loss(lbar, rewards, list(bounds), list(weights),
                               loo_baseline=loo_baseline and lbar.shape[0] >= 2)
    return loss, {"train/constraint_loss": float(loss.detach()),
                  "train/norm_logprob": float(lbar.detach().mean())}


l3m_constraint.weighting = "rows"  # a mean over sequences: micro-batches weigh by rows

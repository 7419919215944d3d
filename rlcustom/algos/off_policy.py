"""Off-policy correction for rollouts sampled by an engine whose weights lag the learner's.

With ``algo.max_staleness: k >= 1`` the rollout engines generate step ``t+1`` while the learner trains on
step ``t``, so a batch is sampled by a behaviour policy ``mu`` (the engine, up to ``k`` weight versions
old, and a different kernel stack) rather than by ``pi_old`` (the learner's weights at the update).

**Truncated importance sampling** (TIS; Yao, Liu, Zhang, Lu, Gao, "Your Efficient RL Framework Secretly
Brings You Off-Policy RL Training", 2025, the TIS estimator; as in verl's ``tis_imp_ratio_cap`` and
Flash-RL; the truncation of Ionides 2008 / Espeholt et al. 2018, IMPALA Eq. 1, ``rho_bar``)::

    w_t = min( pi_old(a_t | s_t) / mu(a_t | s_t), C )                                   (TIS)
        = min( exp(log pi_old(a_t | s_t) - log mu(a_t | s_t)), C )

    grad J = E_{a ~ mu}[ w_t * grad log pi_theta(a_t | s_t) * A_t ]

``w_t`` is a constant (no gradient) that multiplies each token's policy loss before aggregation:
``loss_t <- w_t * loss_t`` for REINFORCE (``-A_t log pi_theta``) and for the PPO clipped surrogate
(``max(-A_t rho_t, -A_t clip(rho_t))`` with ``rho_t = pi_theta / pi_old``; the learner's ``pi_old``
stays the proximal policy of the clip, the engine's ``mu`` enters only through ``w_t``, the decoupled
form of Hilton et al. 2022, "Batch size-invariance for policy optimization", Eq. 2). ``C`` (``algo.is_cap``)
bounds the variance; ``C = inf`` is plain importance sampling.

The **engine-vs-learner gap** on the sampled tokens: ``mean |log pi_old - log mu|`` and the k3 estimate of
``KL(mu || pi_old)`` under samples from ``mu`` (Schulman 2020, "Approximating KL divergence"),
``E_mu[(r - 1) - log r]``, ``r = pi_old / mu`` (non-negative per token).

**pi_old from the update's own forward.** When the update is one optimizer step over the whole batch (one
epoch, no mini-batches), every micro-batch's forward runs with the weights ``theta_old`` that a separate
forward before the update would have used, so ``log pi_old = stop_gradient(log pi_theta)`` on every token
(verl reuses the actor's log-prob as ``old_log_prob`` in the same on-policy case). A batch flagged with
:data:`PI_OLD_FROM_UPDATE` carries no learner ``logprobs``: the objectives take ``pi_old`` from their own
forward (:func:`old_logprobs`), so ``rho_t = exp(log pi_theta - stop_gradient(log pi_theta)) = 1`` with the
gradient of ``log pi_theta``, and ``w_t = min(exp(stop_gradient(log pi_theta) - log mu), C)`` is the same TIS
weight. They hand those log-probs back under :data:`UPDATE_LOGPROBS` (``[B, T]``), from which the trainer
measures the gap and the weight statistics after the update. This holds only when the training forward
equals an evaluation forward (no active dropout).
"""
from __future__ import annotations

import torch

from rlcustom.algos.masked import masked_mean

__all__ = ["truncated_is_weights", "logprob_gap", "is_weight_stats", "old_logprobs", "update_logprobs_stat",
           "PI_OLD_FROM_UPDATE", "UPDATE_LOGPROBS"]

PI_OLD_FROM_UPDATE = "pi_old_from_update"  # batch flag: pi_old is the update's own detached log-probs
UPDATE_LOGPROBS = "rows/update_logprobs"  # objective stat: the update forward's detached log-probs [B, T]


def old_logprobs(batch: dict, logprobs: torch.Tensor) -> torch.Tensor:
    """``log pi_old`` of the batch's tokens: ``logprobs.detach()`` (this forward's own, ``logprobs`` being
    ``log pi_theta`` ``[B, T]``) when the batch is flagged :data:`PI_OLD_FROM_UPDATE`, else ``batch["logprobs"]``."""
    return logprobs.detach() if batch.get(PI_OLD_FROM_UPDATE) else batch["logprobs"]


def update_logprobs_stat(batch: dict, logprobs: torch.Tensor) -> dict:
    """``{UPDATE_LOGPROBS: logprobs.detach()}`` for a batch flagged :data:`PI_OLD_FROM_UPDATE`, else ``{}``."""
    return {UPDATE_LOGPROBS: logprobs.detach()} if batch.get(PI_OLD_FROM_UPDATE) else {}


def truncated_is_weights(old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor,
                         cap: float) -> torch.Tensor:
    """``w_t = min(exp(old_logprobs - behaviour_logprobs), cap)`` on valid tokens, 0 on padding; detached.

    Args:
        old_logprobs: ``[B, T]`` log pi_old (the learner's weights at the update) of the sampled tokens.
        behaviour_logprobs: ``[B, T]`` log mu (the engine that sampled them).
        mask: ``[B, T]`` 1 on valid tokens.
        cap: the truncation ``C > 0``.
    """
    if not cap > 0:
        raise ValueError(f"the importance-weight cap must be > 0, got {cap}")
    valid = mask.bool()
    log_w = torch.where(valid, old_logprobs.detach() - behaviour_logprobs.detach(), torch.zeros_like(old_logprobs))
    w = torch.clamp(torch.exp(log_w), max=float(cap))
    return torch.where(valid, w, torch.zeros_like(w))


def is_weight_stats(old_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor,
                    cap: float) -> dict[str, float]:
    """``is/weight_mean``, ``is/weight_max`` of the truncated weights over valid tokens and ``is/clipfrac``,
    the fraction of valid tokens whose ratio exceeded the cap (0 for a batch without valid tokens)."""
    valid = mask.bool()
    w = truncated_is_weights(old_logprobs, behaviour_logprobs, mask, cap)
    if not valid.any():
        return {"is/weight_mean": 0.0, "is/weight_max": 0.0, "is/clipfrac": 0.0}
    raw = torch.exp((old_logprobs - behaviour_logprobs).detach())
    return {"is/weight_mean": float(w[valid].mean()), "is/weight_max": float(w[valid].max()),
            "is/clipfrac": float((raw[valid] > cap).to(torch.float32).mean())}


def logprob_gap(learner_logprobs: torch.Tensor, engine_logprobs: torch.Tensor,
                mask: torch.Tensor) -> dict[str, float]:
    """``rollout/logprob_gap_abs``: mean ``|log pi - log mu|``; ``rollout/logprob_kl``: mean k3
    ``(r - 1) - log r`` with ``r = pi / mu`` (estimates ``KL(mu || pi)`` from tokens sampled by ``mu``)."""
    f = mask.to(torch.float32)
    d = torch.where(mask.bool(), (learner_logprobs - engine_logprobs).detach().float(), torch.zeros_like(f))
    return {"rollout/logprob_gap_abs": float(masked_mean(d.abs(), f)),
            "rollout/logprob_kl": float(masked_mean(torch.expm1(d) - d, f))}

"""PPO losses, entropy and loss aggregation.

Schulman, Wolski, Dhariwal, Radford, Klimov, "Proximal Policy Optimization
Algorithms", 2017: clipped surrogate objective Eq. (7),

    L^CLIP = E_t[ min(rho_t * A_t, clip(rho_t, 1 - eps, 1 + eps) * A_t) ],
    rho_t  = pi_theta(a_t | s_t) / pi_old(a_t | s_t),

minimised here as its negative, per token. The value loss is the clipped form of
the PPO reference implementation (OpenAI baselines ``ppo2``), and the entropy bonus
is the ``c_2 S[pi_theta]`` term of Eq. (9).

Loss functions return ``(loss, stats)`` where ``loss`` is a differentiable 0-d
tensor and ``stats`` maps names to detached 0-d tensors (no host sync; call
``float()`` when logging). The learner objectives that apply them are in :mod:`rlcustom.objectives` (``ppo_clip``, ``value_clip``).
"""
from __future__ import annotations

import torch

from rlcustom.algos.masked import masked_mean, masked_sum

__all__ = [
    "AGG_MODES",
    "aggregate",
    "ppo_policy_loss",
    "ppo_value_loss",
    "entropy_from_logits",
    "entropy_bonus",
]

AGG_MODES: tuple[str, ...] = ("token", "seq", "seq_sum")


def aggregate(loss_tokens: torch.Tensor, mask: torch.Tensor, agg: str = "token") -> torch.Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar over valid tokens.

    * ``"token"``: mean over all valid tokens of the batch (every token weighs the same;
      DAPO, Yu et al. 2025, "token-level policy gradient loss").
    * ``"seq"``: mean over the valid tokens of each sequence, then mean over sequences
      (every sequence weighs the same; the original GRPO objective, Shao et al. 2024, Eq. 3).
    * ``"seq_sum"``: sum over the valid tokens of each sequence, then mean over sequences
      (the sequence-level REINFORCE / log-likelihood form).

    Sequences with no valid token are left out of the sequence means; a batch with no
    valid token gives 0.
    """
    if loss_tokens.shape != mask.shape:
        raise ValueError(f"loss_tokens and mask must have the same shape; got {tuple(loss_tokens.shape)}, {tuple(mask.shape)}")
    if agg == "token":
        return masked_mean(loss_tokens, mask)
    if agg in ("seq", "seq_sum"):
        per_seq = masked_mean(loss_tokens, mask, dim=-1) if agg == "seq" else masked_sum(loss_tokens, mask, dim=-1)
        has_tokens = mask.bool().any(dim=-1)
        return masked_mean(per_seq, has_tokens)
    raise ValueError(f"unknown aggregation {agg!r}; expected one of {AGG_MODES}")


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    agg: str = "token",
    token_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate loss (Schulman et al. 2017, Eq. 7), per token:

        loss_t = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - clip_eps, 1 + clip_eps_high))

    with ``rho_t = exp(logprobs - old_logprobs)``; ``clip_eps_high`` defaults to
    ``clip_eps`` (a larger one is DAPO's "clip-higher", Yu et al. 2025, Eq. 10).
    Tokens where the clipped branch is taken contribute no gradient.

    Args:
        logprobs: ``[B, T]`` log pi_theta of the sampled tokens (differentiable).
        old_logprobs: ``[B, T]`` log pi_old of the same tokens (behaviour policy).
        advantages: ``[B, T]``.
        mask: ``[B, T]`` 1 on valid tokens.
        agg: see :func:`aggregate`.
        token_weights: optional ``[B, T]`` constants multiplying each token's loss before aggregation
            (the truncated importance weights of :func:`rlcustom.algos.off_policy.truncated_is_weights`).

    Returns:
        ``(loss, stats)``; stats: ``clipfrac`` (fraction of valid tokens where the
        clipped branch is active, i.e. the gradient is cut), ``approx_kl`` (mean k3
        estimate of KL(pi_old || pi_theta): ``(rho - 1) - log rho``, Schulman's
        "Approximating KL divergence" blog, unbiased under samples from pi_old),
        ``ratio_mean``, ``policy_loss``.
    """
    eps_low = clip_eps
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    valid = mask.bool()
    # Zero the log-ratio on padding before exp, so garbage there (e.g. -inf) cannot
    # produce inf/nan in the forward or the backward pass.
    log_ratio = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    pg_unclipped = -advantages * ratio
    pg_clipped = -advantages * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss_tokens = torch.maximum(pg_unclipped, pg_clipped)
    if token_weights is not None:
        loss_tokens = loss_tokens * token_weights.detach()
    loss = aggregate(loss_tokens, mask, agg)

    with torch.no_grad():
        fmask = mask.to(loss_tokens.dtype)
        stats = {
            "clipfrac": masked_mean((pg_clipped > pg_unclipped).to(loss_tokens.dtype), fmask),
            "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, fmask),
            "ratio_mean": masked_mean(ratio, fmask),
            "policy_loss": loss.detach(),
        }
    return loss, stats


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None = 0.2,
    agg: str = "token",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss of the PPO reference implementation (OpenAI baselines
    ``ppo2``; also Ziegler et al. 2019 and verl/TRL), per token:

        V_clip = V_old + clip(V - V_old, -clip_eps, clip_eps)
        loss_t = 0.5 * max((V - R)^2, (V_clip - R)^2)

    ``clip_eps=None`` gives the plain ``0.5 * (V - R)^2``.

    Returns:
        ``(loss, stats)``; stats: ``vf_clipfrac`` (fraction of valid tokens where the
        clipped error is the larger one, i.e. the gradient is cut), ``value_loss``,
        ``value_mean``.
    """
    err_unclipped = (values - returns) ** 2
    if clip_eps is None:
        err = err_unclipped
        clipped_active = torch.zeros_like(err_unclipped, dtype=torch.bool)
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err_clipped = (v_clipped - returns) ** 2
        err = torch.maximum(err_unclipped, err_clipped)
        clipped_active = err_clipped > err_unclipped
    loss_tokens = 0.5 * err
    valid = mask.bool()
    loss_tokens = torch.where(valid, loss_tokens, torch.zeros_like(loss_tokens))
    loss = aggregate(loss_tokens, mask, agg)
    with torch.no_grad():
        fmask = mask.to(loss_tokens.dtype)
        stats = {
            "vf_clipfrac": masked_mean(clipped_active.to(loss_tokens.dtype), fmask),
            "value_loss": loss.detach(),
            "value_mean": masked_mean(values.detach(), fmask),
        }
    return loss, stats


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution ``softmax(logits)`` over the last dim:

        H = logsumexp(z) - sum_v softmax(z)_v * z_v

    (equal to ``-sum p log p``, without materialising ``log_softmax``). ``[B, T, V] -> [B, T]``.
    Computed in the logits' dtype; logits must be finite (a ``-inf`` logit would give
    ``0 * -inf``).
    """
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def entropy_bonus(logits: torch.Tensor, mask: torch.Tensor, agg: str = "token") -> torch.Tensor:
    """Aggregated policy entropy ``S[pi_theta]`` over valid tokens (Schulman et al. 2017,
    Eq. 9, the ``c_2 S`` term). Returns the (positive) entropy; a trainer *subtracts*
    ``ent_coef * entropy_bonus(...)`` from the loss to encourage exploration."""
    return aggregate(entropy_from_logits(logits), mask, agg)

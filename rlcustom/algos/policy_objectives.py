"""Policy objectives of recent RL-for-LLM papers: the pure math (the learner objectives that use it are in
:mod:`rlcustom.objectives.clipped`).

Notation: ``rho_t = pi_theta(y_t | x, y_<t) / pi_old(y_t | x, y_<t)``, ``A`` the advantage, ``|y_i|``
the length of response ``i``, ``G`` the responses in a batch. Losses are minimised (negated objectives).

* **DAPO** (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale", Eq. 8):
  ``J = E[ 1/sum_i |y_i| * sum_i sum_t min(rho_t A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) A_i) ]``:
  decoupled clip ("clip-higher", eps_high > eps_low), token-level aggregation (``agg="token"``),
  dynamic sampling (:mod:`rlcustom.trainers.filters`) and the overlong soft penalty (:func:`overlong_penalty`, Eq. 13).
* **Dual-clip PPO** (Ye et al. 2020, "Mastering Complex Control in MOBA Games with Deep RL", Eq. 5):
  for ``A < 0`` the clipped objective is further bounded below by ``c * A`` (``c > 1``):
  ``J_t = max(min(rho A, clip(rho) A), c A)`` if ``A < 0``, else ``min(rho A, clip(rho) A)``.
* **Dr. GRPO** (Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective", Sec. 3.2):
  GRPO without the ``1/|y_i|`` length normaliser and without the std scaling of advantages:
  ``J = 1/(G * L) sum_i sum_t min(rho_t A_i, clip(rho_t) A_i)``, ``A_i = r_i - mean(r_group)``, ``L`` a
  constant (here ``max_new_tokens``): ``agg="const"``.
* **GSPO** (Zheng et al. 2025, "Group Sequence Policy Optimization", Eq. 5-7): a sequence-level ratio
  ``s_i = (pi_theta(y_i|x) / pi_old(y_i|x))^(1/|y_i|) = exp(1/|y_i| sum_t log rho_t)`` clipped per sequence,
  ``J = 1/G sum_i min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)`` (paper: eps 3e-4 / 4e-4).
* **REINFORCE++** (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning LLMs", Sec. 3):
  token returns of the KL-shaped reward ``G_t = sum_{s>=t} gamma^(s-t) r_s`` normalised over the whole
  batch, ``A_t = (G_t - mean_batch G) / std_batch G`` (no critic, no per-prompt baseline): :func:`reinforce_pp_estimator`.
"""
from __future__ import annotations

from typing import Any

import torch

from rlcustom.algos.masked import masked_mean, masked_sum, masked_whiten
from rlcustom.registry import ADV_ESTIMATORS

__all__ = ["clipped_policy_loss", "gspo_loss", "overlong_penalty", "returns_to_go", "reinforce_pp_estimator",
           "POLICY_AGG"]

POLICY_AGG = ("token", "seq", "seq_sum", "const")


def _aggregate(loss_tokens: torch.Tensor, mask: torch.Tensor, agg: str, max_len: int | None) -> torch.Tensor:
    if agg == "const":  # Dr. GRPO: sum over all tokens / (G * L), L a constant
        if not max_len:
            raise ValueError("agg='const' needs max_len (the constant normaliser L, e.g. max_new_tokens)")
        return masked_sum(loss_tokens, mask) / (loss_tokens.shape[0] * float(max_len))
    from rlcustom.algos.ppo import aggregate

    return aggregate(loss_tokens, mask, agg)


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
                        dual_clip_c: float | None = None, agg: str = "token",
                        max_len: int | None = None, token_weights: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate with a decoupled clip range (DAPO Eq. 8), an optional dual clip (Ye et al. 2020,
    Eq. 5) and any aggregation of :data:`POLICY_AGG` (``"const"``: Dr. GRPO). Per token::

        l_t = max(-A rho, -A clip(rho, 1 - clip_eps, 1 + clip_eps_high))
        l_t = min(l_t, -c A)            if dual_clip_c = c and A < 0

    ``advantages`` is ``[B, T]`` (or ``[B]``, broadcast to tokens); ``token_weights`` (optional ``[B, T]``,
    detached) multiply ``l_t`` before aggregation (truncated importance weights,
    :mod:`rlcustom.algos.off_policy`). Stats: ``clipfrac`` (upper/lower clip
    active), ``dual_clipfrac`` (the dual bound active), ``approx_kl``, ``ratio_mean``, ``policy_loss``.
    """
    if dual_clip_c is not None and dual_clip_c <= 1.0:
        raise ValueError(f"dual_clip_c must be > 1 (Ye et al. 2020), got {dual_clip_c}")
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    valid = mask.bool()
    log_ratio = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    loss_tokens = torch.maximum(unclipped, clipped)
    dual_active = torch.zeros_like(valid)
    if dual_clip_c is not None:
        bound = -dual_clip_c * advantages
        dual_active = (advantages < 0) & (loss_tokens > bound)
        loss_tokens = torch.where(dual_active, bound, loss_tokens)
    loss_tokens = torch.where(valid, loss_tokens, torch.zeros_like(loss_tokens))
    if token_weights is not None:
        loss_tokens = loss_tokens * token_weights.detach()
    loss = _aggregate(loss_tokens, mask, agg, max_len)
    with torch.no_grad():
        f = mask.to(loss_tokens.dtype)
        stats = {"clipfrac": masked_mean((clipped > unclipped).to(f.dtype), f),
                 "dual_clipfrac": masked_mean(dual_active.to(f.dtype), f),
                 "approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, f),
                 "ratio_mean": masked_mean(ratio, f), "policy_loss": loss.detach()}
    return loss, stats


def gspo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              clip_eps: float = 3e-4, clip_eps_high: float | None = 4e-4) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (Zheng et al. 2025, Eq. 5-7): ``s_i = exp(mean_t log rho_t)``,
    ``loss = 1/G sum_i max(-A_i s_i, -A_i clip(s_i, 1 - clip_eps, 1 + clip_eps_high))``.

    ``A_i`` is the sequence advantage (``advantages`` ``[B]``, or ``[B, T]`` constant over the response:
    its mean over valid tokens is used). Responses without tokens are left out.
    """
    valid = mask.bool()
    n = valid.sum(-1)
    has = n > 0
    log_ratio = torch.where(valid, logprobs - old_logprobs, torch.zeros_like(logprobs))
    seq_log_ratio = log_ratio.sum(-1) / n.clamp(min=1)
    s = torch.exp(seq_log_ratio)
    adv = advantages if advantages.dim() == 1 else masked_mean(advantages, mask, dim=-1)
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    unclipped = -adv * s
    clipped = -adv * torch.clamp(s, 1.0 - clip_eps, 1.0 + eps_high)
    per_seq = torch.maximum(unclipped, clipped)
    loss = masked_mean(per_seq, has)
    with torch.no_grad():
        stats = {"clipfrac": masked_mean((clipped > unclipped).to(s.dtype), has),
                 "seq_ratio_mean": masked_mean(s, has), "policy_loss": loss.detach()}
    return loss, stats


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, Eq. 13), added to the reward::

        R(y) = 0                                  if |y| <= L_max - L_cache
             = ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
             = -1                                 if |y| > L_max

    times ``factor``; ``L_max = max_len`` (the generation limit), ``L_cache = buffer``.
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer must be in (0, max_len={max_len}], got {buffer}")
    lengths = lengths.to(torch.float32)
    start = max_len - buffer
    r = torch.where(lengths <= start, torch.zeros_like(lengths), (start - lengths) / buffer)
    return factor * torch.where(lengths > max_len, torch.full_like(lengths, -1.0), r)


def returns_to_go(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s - t) r_s`` over valid tokens (0 on padding)."""
    r = token_rewards * mask
    out = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1] - 1, -1, -1):
        running = r[:, t] + gamma * running
        out[:, t] = running
    return out * mask


@ADV_ESTIMATORS.register("reinforce_pp")
def reinforce_pp_estimator(*, token_rewards: torch.Tensor | None = None, values: Any = None, mask: torch.Tensor,
                           scores: torch.Tensor | None = None, group_ids: Any = None, gamma: float = 1.0,
                           lam: float = 1.0) -> tuple[torch.Tensor, None]:
    """REINFORCE++ (Hu 2025, Sec. 3): returns-to-go of the (KL-shaped) token rewards, whitened over
    every valid token of the batch (global normalisation, no per-prompt baseline)."""
    if token_rewards is None:
        if scores is None:
            raise ValueError("reinforce_pp needs token_rewards or scores")
        last = (mask.sum(-1).long() - 1).clamp(min=0)
        token_rewards = torch.zeros_like(mask, dtype=torch.float32)
        token_rewards[torch.arange(mask.shape[0]), last] = scores.to(torch.float32)
    g = returns_to_go(token_rewards.to(torch.float32), mask.to(torch.float32), gamma)
    return masked_whiten(g, mask) * mask, None


# --------------------------------------------------------------------------- learner objectives

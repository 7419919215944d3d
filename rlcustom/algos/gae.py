"""Generalized Advantage Estimation (GAE).

Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous Control
Using Generalized Advantage Estimation", ICLR 2016, Eq. (16):

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = sum_{l >= 0} (gamma * lam)^l * delta_{t+l}
            = delta_t + gamma * lam * A_{t+1}           (computed backwards)

and the value target ``R_t = A_t + V(s_t)`` (the TD(lambda) return).

For LLMs each generated token is one step; the episode ends at the last valid
token, so V and A are taken as 0 beyond it. Positions with ``mask == 0`` are
*skipped*: the recursion carries ``V_{t+1}`` and ``A_{t+1}`` through them
unchanged, so the valid tokens of a row behave as one contiguous episode.
With right padding (the usual case) this is exactly "V = A = 0 after the last
valid token"; with interior gaps (e.g. masked tool output in multi-turn
rollouts, as verl does) a gap is not counted as a time step and any reward
placed on a masked position is ignored. Masked positions come back 0 in both
outputs.

This module also registers the uniform estimator ``"gae"`` in
:data:`rlcustom.registry.ADV_ESTIMATORS`; see :mod:`rlcustom.algos.advantages`
for the uniform estimator signature.
"""
from __future__ import annotations


import torch

from rlcustom.registry import ADV_ESTIMATORS

__all__ = ["gae_advantages", "gae_estimator"]


def gae_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and TD(lambda) returns (Schulman et al. 2016, Eq. 16).

    Args:
        rewards: ``[B, T]`` per-token rewards ``r_t``.
        values: ``[B, T]`` value estimates ``V(s_t)``.
        mask: ``[B, T]`` 1 on valid (generated) tokens, 0 elsewhere.
        gamma: discount factor.
        lam: GAE lambda (0 -> one-step TD error, 1 -> Monte-Carlo return minus V).

    Returns:
        ``(advantages, returns)``, both ``[B, T]`` with ``returns = advantages + values``
        on valid positions and 0 on masked positions (a row with an all-zero
        mask gives all zeros).

    The loop runs backwards over T only; the batch is vectorised. The function
    is differentiable, but callers normally compute it under ``torch.no_grad()``
    on detached values.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards, values and mask must all be [B, T]; got {tuple(rewards.shape)}, "
            f"{tuple(values.shape)}, {tuple(mask.shape)}"
        )
    dtype = torch.promote_types(rewards.dtype, values.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    rewards = rewards.to(dtype)
    values = values.to(dtype)
    valid = mask.bool()
    zero = torch.zeros((), dtype=dtype, device=rewards.device)

    B, T = rewards.shape
    next_value = torch.zeros(B, dtype=dtype, device=rewards.device)
    next_adv = torch.zeros(B, dtype=dtype, device=rewards.device)
    advs: list[torch.Tensor] = []
    for t in range(T - 1, -1, -1):
        m = valid[:, t]
        # torch.where (not multiplication) so inf/nan in padded slots cannot leak in.
        v_t = torch.where(m, values[:, t], zero)
        r_t = torch.where(m, rewards[:, t], zero)
        delta = r_t + gamma * next_value - v_t
        a_t = delta + gamma * lam * next_adv
        advs.append(torch.where(m, a_t, zero))
        next_adv = torch.where(m, a_t, next_adv)
        next_value = torch.where(m, v_t, next_value)
    advantages = torch.stack(advs[::-1], dim=1) if T > 0 else torch.zeros_like(rewards)
    returns = torch.where(valid, advantages + values, zero)
    return advantages, returns


@ADV_ESTIMATORS.register("gae")
def gae_estimator(
    *,
    token_rewards: torch.Tensor,
    values: torch.Tensor | None,
    mask: torch.Tensor,
    scores: torch.Tensor | None = None,
    group_ids: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform-signature wrapper of :func:`gae_advantages` (needs a critic: ``values``)."""
    if values is None:
        raise ValueError("the 'gae' advantage estimator needs values from a critic (got values=None)")
    return gae_advantages(token_rewards, values, mask, gamma, lam)

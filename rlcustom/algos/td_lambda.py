"""TD(lambda) value targets and the value-regression loss of Value Augmented Sampling.

Han, Shenfeld, Srivastava, Kim, Agrawal, "Value Augmented Sampling for Language
Model Alignment and Personalization", 2024 (VAS), Section 3.3: the value estimator
``V^{pi_0}`` of the *frozen* base policy is trained with TD(lambda) on responses
sampled from ``pi_0`` and scored by the reward model ("we use TD(lambda) algorithm
(Sutton & Barto, 2018; Schulman et al., 2015) to train our value estimator").
It is then plugged into the decoding rule of VAS Eq. (4)/(5)
(:mod:`rlcustom.algos.vas`; decoding: :mod:`rlcustom.decoding.vas`).

The lambda-return (Sutton & Barto 2018, Eq. 12.18 in recursive form) is

    G_t = r_t + gamma * ((1 - lam) * V(s_{t+1}) + lam * G_{t+1}),

with ``V`` and ``G`` taken as 0 beyond the last valid token (the episode ends there).
``lam = 0`` is the one-step TD(0) target ``r_t + gamma * V(s_{t+1})``; ``lam = 1`` is
the (discounted) Monte-Carlo return, i.e. plain regression of every prefix on the
final reward -- the paper's "Online FUDGE" baseline ("it can also be seen as a TD(1)
version of VAS", Section 4.1.2). The target equals GAE's ``A_t + V(s_t)``
(Schulman et al. 2016, Eq. 16; see :mod:`rlcustom.algos.gae`).

Applied by the value objective ``value_mse`` (:func:`value_mse_loss`).
"""
from __future__ import annotations

import torch

from rlcustom.algos.masked import masked_mean

__all__ = ["td_lambda_targets", "value_mse_loss"]


def _check_bt(name: str, x: torch.Tensor, shape: torch.Size | None = None) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be [B, T]; got shape {tuple(x.shape)}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(x.shape)}")


@torch.no_grad()
def td_lambda_targets(
    values: torch.Tensor,
    rewards: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> torch.Tensor:
    """TD(lambda) targets ``G`` for the value estimator (VAS, Section 3.3).

    ``G_t = r_t + gamma * ((1 - lam) * V_{t+1} + lam * G_{t+1})``, computed backwards.

    Args:
        values: ``[B, T]`` ``V(s_t)`` of the state *before* token ``t`` is generated
            (the value head read at token ``t``'s input position). Detached.
        rewards: ``[B, T]`` per-token rewards; for VAS usually 0 everywhere except the
            sequence reward at the last valid token.
        mask: ``[B, T]`` 1 on valid (generated) tokens. Right padding is the normal
            case; an interior 0 is *skipped* (the recursion carries ``V_{t+1}``,
            ``G_{t+1}`` across it, as :func:`rlcustom.algos.gae.gae_advantages`
            does), so reward placed on a masked position is ignored.
        gamma: discount in ``[0, 1]``.
        lam: lambda in ``[0, 1]`` (0: TD(0); 1: Monte-Carlo return / Online FUDGE).

    Returns:
        ``[B, T]`` targets, 0 where ``mask`` is 0 (a row with an all-zero mask is all
        zeros). Computed without gradient; values in padded slots (even inf/nan)
        never reach valid targets.
    """
    _check_bt("values", values)
    _check_bt("rewards", rewards, values.shape)
    _check_bt("mask", mask, values.shape)
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in [0, 1]; got {gamma}")
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be in [0, 1]; got {lam}")
    dtype = torch.promote_types(values.dtype, rewards.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    values = values.detach().to(dtype)
    rewards = rewards.detach().to(dtype)
    valid = mask.bool()
    B, T = values.shape
    zero = torch.zeros((), dtype=dtype, device=values.device)
    next_v = torch.zeros(B, dtype=dtype, device=values.device)  # V_{t+1}; 0 past the end
    next_g = torch.zeros(B, dtype=dtype, device=values.device)  # G_{t+1}; 0 past the end
    out = torch.zeros_like(values)
    for t in range(T - 1, -1, -1):
        m = valid[:, t]
        r_t = torch.where(m, rewards[:, t], zero)
        g_t = r_t + gamma * ((1.0 - lam) * next_v + lam * next_g)
        out[:, t] = torch.where(m, g_t, zero)
        next_g = torch.where(m, g_t, next_g)
        next_v = torch.where(m, values[:, t], next_v)
    return out


def value_mse_loss(
    values: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean squared error of the value estimator against (detached) TD(lambda) targets,
    averaged over the valid tokens of the batch:

        loss = sum_{valid} (V(s_t) - G_t)^2 / #valid

    (no 1/2 factor). Padded positions contribute neither value nor gradient, even
    if they hold inf/nan. A batch with no valid token gives 0.

    Returns:
        ``(loss, stats)``; stats: ``value_loss``, ``value_mean``, ``target_mean``
        (detached 0-d tensors).
    """
    _check_bt("values", values)
    _check_bt("targets", targets, values.shape)
    _check_bt("mask", mask, values.shape)
    valid = mask.bool()
    targets = targets.detach()
    diff = torch.where(valid, values - targets, torch.zeros_like(values))
    loss = masked_mean(diff * diff, valid.to(values.dtype))
    with torch.no_grad():
        fmask = valid.to(values.dtype)
        stats = {
            "value_loss": loss.detach(),
            "value_mean": masked_mean(torch.where(valid, values.detach(), torch.zeros_like(values)), fmask),
            "target_mean": masked_mean(torch.where(valid, targets, torch.zeros_like(targets)), fmask),
        }
    return loss, stats

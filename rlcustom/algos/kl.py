"""KL divergence between the policy and a reference policy, estimated per token.

John Schulman, "Approximating KL divergence" (blog, 2020), with samples
``x ~ pi`` (the policy that generated the tokens) and ``log r = ref_lp - lp``:

    k1 = -log r        = lp - ref_lp                       unbiased, high variance, can be < 0
    k2 = 0.5 (log r)^2 = 0.5 (lp - ref_lp)^2               biased, low variance, >= 0
    k3 = (r - 1) - log r = exp(ref_lp - lp) - (ref_lp - lp) - 1   unbiased, low variance, >= 0

each an estimate of KL(pi || pi_ref) = E_pi[log pi - log pi_ref]. k3 is the KL term of
GRPO (Shao et al. 2024, Eq. 4). Registered in :data:`rlcustom.registry.KL_ESTIMATORS`
as ``"k1"``, ``"k2"``, ``"k3"``; an estimator maps ``(logprobs, ref_logprobs)`` (same
shape) to per-token values.

KL enters training either as a reward penalty (:func:`kl_penalty_rewards`, Ziegler et
al. 2019 / Stiennon et al. 2020 / InstructGPT) or as a loss term (:func:`kl_loss`, GRPO);
the penalty coefficient can follow :class:`AdaptiveKLController` (Ziegler et al. 2019).
"""
from __future__ import annotations

from typing import Callable, Union

import torch

from rlcustom.algos.ppo import aggregate
from rlcustom.registry import KL_ESTIMATORS

__all__ = [
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "get_kl_estimator",
    "kl_penalty_rewards",
    "kl_loss",
    "FixedKLController",
    "AdaptiveKLController",
]

KLEstimator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@KL_ESTIMATORS.register("k1")
def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log pi_ref (Schulman 2020). Unbiased for KL(pi || pi_ref); may be negative."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k2 = 0.5 * (log pi - log pi_ref)^2 (Schulman 2020). Non-negative, biased (second-order accurate)."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """k3 = exp(ref - lp) - (ref - lp) - 1 (Schulman 2020; GRPO Eq. 4). Unbiased and >= 0.

    Computed as ``expm1(x) - x`` for accuracy near 0. Unclamped: a log-ratio above
    ~88 overflows float32, so keep the inputs sane (clip upstream if needed).
    """
    x = ref_logprobs - logprobs
    return torch.expm1(x) - x


def get_kl_estimator(estimator: Union[str, KLEstimator]) -> KLEstimator:
    """Look a KL estimator up by name in KL_ESTIMATORS, or pass a callable through."""
    return KL_ESTIMATORS.get(estimator) if isinstance(estimator, str) else estimator


def _last_valid_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the last position where mask is 1 in each row, and whether the row has one."""
    valid = mask.bool()
    T = mask.shape[-1]
    pos = torch.arange(1, T + 1, device=mask.device).expand_as(valid)
    last = torch.where(valid, pos, torch.zeros_like(pos)).argmax(dim=-1)
    return last, valid.any(dim=-1)


def kl_penalty_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: Union[str, KLEstimator] = "k1",
) -> torch.Tensor:
    """Per-token rewards with a KL penalty (Ziegler et al. 2019, Sec. 2.2; Stiennon et al.
    2020, Eq. 1; Ouyang et al. 2022, Eq. 2):

        r_t = -kl_coef * KL_t            on every valid token
        r_T += score                      on the last valid token of the sequence

    Args:
        scores: ``[B]`` sequence scores.
        logprobs, ref_logprobs: ``[B, T]`` of the sampled tokens under the policy and the reference.
        mask: ``[B, T]`` 1 on valid tokens (right padding or any pattern: the score goes
            on the *last* valid position).
        kl_coef: penalty coefficient beta (e.g. ``controller.value``).
        estimator: ``"k1"`` (the classic choice), ``"k2"``, ``"k3"`` or a callable.

    Returns:
        ``[B, T]`` token rewards, 0 on masked positions (a row with no valid token is all 0).
        Not detached: pass detached logprobs (rewards are constants for the policy gradient).
    """
    if logprobs.shape != ref_logprobs.shape or logprobs.shape != mask.shape or logprobs.dim() != 2:
        raise ValueError("logprobs, ref_logprobs and mask must all be [B, T]")
    valid = mask.bool()
    kl = get_kl_estimator(estimator)(logprobs, ref_logprobs)
    rewards = torch.where(valid, -kl_coef * kl, torch.zeros_like(kl))
    last, has_any = _last_valid_index(mask)
    score = torch.where(has_any, scores.to(rewards.dtype), torch.zeros((), dtype=rewards.dtype, device=rewards.device))
    return rewards.scatter_add(1, last[:, None], score[:, None])


def kl_loss(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    estimator: Union[str, KLEstimator] = "k3",
    agg: str = "token",
) -> torch.Tensor:
    """KL(pi || pi_ref) as a differentiable loss term (GRPO, Shao et al. 2024, Eq. 3-4:
    ``+ beta * D_KL`` with the k3 estimator). Returns a 0-d tensor, aggregated over valid
    tokens with :func:`rlcustom.algos.ppo.aggregate`; multiply by beta in the trainer.

    Note: the gradient of k3 w.r.t. ``logprobs`` is ``1 - pi_ref/pi``, whose expectation
    under pi is not the gradient of KL; this is the standard GRPO practice nonetheless.
    """
    valid = mask.bool()
    # Neutralise padding before the estimator so garbage there cannot give inf/nan.
    lp = torch.where(valid, logprobs, torch.zeros_like(logprobs))
    ref = torch.where(valid, ref_logprobs, torch.zeros_like(ref_logprobs))
    kl = get_kl_estimator(estimator)(lp, ref)
    return aggregate(kl, mask, agg)


class FixedKLController:
    """Constant KL coefficient (Ziegler et al. 2019, the non-adaptive baseline)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns the (unchanged) coefficient."""
        return self.value

    def __repr__(self) -> str:
        return f"FixedKLController(value={self.value})"


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from
    Human Preferences", Sec. 2.2), as in their code (``lm-human-preferences``):

        e_t      = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_t+1 = beta_t * (1 + e_t * n_steps / horizon)

    i.e. a proportional controller with gain ``K_beta = n_steps / horizon`` (the paper
    uses K_beta = 0.1 per update).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError("target and horizon must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update the coefficient from the measured KL over ``n_steps`` samples; returns the new value."""
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"

"""L3M: constrained fine-tuning with relaxed logarithmic barriers, and the min-max baseline.

Dhillon, Shi, Teh, Smola, "L3Ms -- Lagrange Large Language Models", ICLR 2025.

Problem (Eqs. 3-5): minimise the task perplexity ``L(theta)`` subject to ``k`` expectation
constraints ``E[r_i(y|x)] >= b_i``, written ``C_i(theta) = E[b_i - r_i(y|x)] <= 0``.

L3M replaces the constraints with the relaxed log-barrier ``B_{mu,s}`` (Eq. 9, with
``s = mu^2``) averaged over the constraints (Eq. 10):

    G_mu(theta) = L(theta) + (1/k) sum_i B_{mu,mu^2}(C_i(theta)),

whose gradient (Eq. 11) is

    dG = dL + (mu/k) sum_i dC_i / max(-C_i, mu^2),

i.e. a barrier-weighted sum of policy gradients ``dC_i = E[(b_i - r_i) d log pi(y|x)]``
(Eq. 12), with ``log pi`` length-normalised (Section 5.3) and ``C_i`` in the
denominator replaced by an exponential moving average (Section 5.3, smoothing 0.1,
Appendix A). ``mu`` is decayed exponentially from 1 to 1e-6 over training
(Section 5.1, Appendix A).

This module holds the math only; the trainer alternates task and constraint steps
and clips their gradients separately (Section 5.3), which is not done here.

The min-max baseline ("MM", Moskovitz et al. 2024; Dai et al. 2024, Section 6.3)
descends the Lagrangian (Eq. 8) in ``theta`` and ascends it in the multipliers:
:func:`lagrangian_loss`, :func:`update_multipliers`.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "relaxed_log_barrier",
    "barrier_derivative",
    "implied_multipliers",
    "barrier_weights",
    "ConstraintEMA",
    "constraint_values",
    "l3m_constraint_loss",
    "mu_schedule",
    "interval_constraint",
    "signed_constraint_rewards",
    "lagrangian_loss",
    "update_multipliers",
]


def _check_mu(mu: float | torch.Tensor) -> float:
    mu = float(mu)
    if not (math.isfinite(mu) and mu > 0.0):
        raise ValueError(f"the barrier parameter mu must be finite and > 0; got {mu}")
    return mu


def relaxed_log_barrier(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Relaxed log-barrier ``B_{mu,s}(z)`` of L3M Eq. (9) with ``s = mu^2``, elementwise:

        -mu * log(-z)                        z <= -s
        (mu / s) * z + mu - mu * log(s)      z >  -s

    Convex, continuous and differentiable at ``z = -s`` (both pieces equal
    ``-mu log s`` with slope ``mu / s``), defined for every real ``z``. The unused
    branch never produces nan/inf, in the forward or the backward pass.
    """
    mu = _check_mu(mu)
    s = mu * mu
    inner = z <= -s
    # Feed log() only values >= s > 0: where the log branch is not selected, use s.
    safe_neg_z = torch.where(inner, -z, torch.full_like(z, s))
    log_branch = -mu * torch.log(safe_neg_z)
    lin_branch = (mu / s) * z + (mu - mu * math.log(s))
    return torch.where(inner, log_branch, lin_branch)


def barrier_derivative(z: torch.Tensor, mu: float) -> torch.Tensor:
    """Closed-form ``dB_{mu,mu^2}/dz = mu / max(-z, mu^2)`` (L3M Eq. 9, right).

    ``mu / (-z)`` for ``z <= -mu^2`` and ``mu / mu^2 = 1/mu`` otherwise; always > 0.
    """
    mu = _check_mu(mu)
    return mu / torch.clamp(-z, min=mu * mu)


def implied_multipliers(constraint_values: torch.Tensor, mu: float) -> torch.Tensor:
    """Lagrange multipliers implied by the barrier (L3M Section 5.2):

        lambda_hat_i = mu / (k * max(-C_i, mu^2)),   k = len(constraint_values).

    Active / violated constraints get ``1 / (k mu)``; strictly satisfied ones
    ``-mu / (k C_i) -> 0`` as ``mu -> 0`` (complementary slackness by design).

    Args:
        constraint_values: ``[k]`` estimates of ``C_i = E[b_i - r_i]`` (detached).
    """
    c = constraint_values.detach()
    if c.dim() != 1 or c.shape[0] == 0:
        raise ValueError(f"constraint_values must be a non-empty [k] tensor; got {tuple(c.shape)}")
    return barrier_derivative(c, mu) / c.shape[0]


def barrier_weights(ema_c: torch.Tensor, mu: float) -> torch.Tensor:
    """Per-constraint weights of the policy gradients in L3M Eq. (11):

        w_i = (mu / k) / max(-C_i_ema, mu^2) = B'_{mu,mu^2}(C_i_ema) / k,

    the barrier derivative at the EMA estimate of ``C_i`` (Section 5.3), divided by
    ``k`` because Eq. (10) *averages* the barriers over the constraints. Numerically
    the same as :func:`implied_multipliers` (Section 5.2 defines those multipliers
    as exactly these coefficients). Detached, ``[k]``.
    """
    return implied_multipliers(ema_c, mu)


def constraint_values(rewards: torch.Tensor, bounds: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Monte-Carlo estimate of ``C_i = E[b_i - r_i]`` (L3M Eq. 5) over a batch: ``[B, k] -> [k]``,
    detached (use it to update :class:`ConstraintEMA` or the min-max multipliers)."""
    rewards = rewards.detach()
    if rewards.dim() != 2 or rewards.shape[0] == 0:
        raise ValueError(f"rewards must be a non-empty [B, k] tensor; got {tuple(rewards.shape)}")
    b = torch.as_tensor(bounds, dtype=rewards.dtype, device=rewards.device)
    if b.shape != (rewards.shape[1],):
        raise ValueError(f"bounds must be [k={rewards.shape[1]}]; got {tuple(b.shape)}")
    return (b - rewards).mean(dim=0)


class ConstraintEMA:
    """Exponential moving average of the constraint values ``C_i`` (L3M Section 5.3).

        ema <- (1 - smoothing) * ema + smoothing * x,

    with the first update setting ``ema = x``. The paper says only "we use an
    exponential moving average estimate for the mean (offset) preference rewards
    C_i(theta) in the denominator" and "use a smoothing factor of 0.1" (Appendix A);
    it states neither the initialisation nor which term the factor multiplies. We
    read the factor as the weight of the *new* observation (0.1 -> slow, low
    variance) and initialise from the first batch (a zero start would bias the
    early barrier weights).

    Args:
        k: number of constraints.
        smoothing: weight of the newest estimate, in ``(0, 1]``.
    """

    def __init__(self, k: int, smoothing: float = 0.1) -> None:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1; got {k}")
        if not 0.0 < float(smoothing) <= 1.0:
            raise ValueError(f"smoothing must be in (0, 1]; got {smoothing}")
        self.k = int(k)
        self.smoothing = float(smoothing)
        self._ema: torch.Tensor | None = None
        self.num_updates = 0

    @property
    def initialized(self) -> bool:
        return self._ema is not None

    @property
    def value(self) -> torch.Tensor:
        """The current ``[k]`` estimate; raises before the first :meth:`update`."""
        if self._ema is None:
            raise RuntimeError("ConstraintEMA has no value before its first update()")
        return self._ema

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """Fold in a new ``[k]`` estimate (e.g. :func:`constraint_values` of a batch);
        returns the updated EMA."""
        x = x.detach()
        if x.shape != (self.k,):
            raise ValueError(f"expected a [k={self.k}] tensor; got {tuple(x.shape)}")
        if self._ema is None:
            self._ema = x.clone()
        else:
            self._ema = (1.0 - self.smoothing) * self._ema.to(x.device, x.dtype) + self.smoothing * x
        self.num_updates += 1
        return self._ema

    def reset(self) -> None:
        self._ema = None
        self.num_updates = 0

    def state_dict(self) -> dict:
        return {
            "k": self.k,
            "smoothing": self.smoothing,
            "ema": None if self._ema is None else self._ema.detach().cpu().clone(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["k"]) != self.k:
            raise ValueError(f"state has k={state['k']}, this EMA has k={self.k}")
        self.smoothing = float(state["smoothing"])
        self._ema = None if state["ema"] is None else state["ema"].clone()
        self.num_updates = int(state["num_updates"])


def _check_constraint_batch(
    seq_logprobs_norm: torch.Tensor, rewards: torch.Tensor, bounds, weights
) -> tuple[torch.Tensor, torch.Tensor]:
    if seq_logprobs_norm.dim() != 1:
        raise ValueError(f"seq_logprobs_norm must be [B]; got {tuple(seq_logprobs_norm.shape)}")
    B = seq_logprobs_norm.shape[0]
    if rewards.dim() != 2 or rewards.shape[0] != B:
        raise ValueError(f"rewards must be [B={B}, k]; got {tuple(rewards.shape)}")
    k = rewards.shape[1]
    dt, dev = seq_logprobs_norm.dtype, seq_logprobs_norm.device
    b = torch.as_tensor(bounds, dtype=dt, device=dev)
    w = torch.as_tensor(weights, dtype=dt, device=dev).detach()
    if b.shape != (k,):
        raise ValueError(f"bounds must be [k={k}]; got {tuple(b.shape)}")
    if w.shape != (k,):
        raise ValueError(f"weights/multipliers must be [k={k}]; got {tuple(w.shape)}")
    return b, w


def l3m_constraint_loss(
    seq_logprobs_norm: torch.Tensor,
    rewards: torch.Tensor,
    bounds: torch.Tensor | Sequence[float],
    weights: torch.Tensor | Sequence[float],
    loo_baseline: bool = False,
) -> torch.Tensor:
    """REINFORCE surrogate whose gradient is the constraint part of L3M Eq. (11):

        loss = (1/B) sum_b [ sum_i w_i * (b_i - r_i(y_b)) ] * lbar_theta(y_b),

    ``lbar_theta(y) = log pi_theta(y|x) / |y|`` (length-normalised, Section 5.3). Its
    gradient is the Monte-Carlo estimate of ``sum_i w_i dC_i`` (Eq. 12), so with
    ``w = barrier_weights(ema_C, mu)`` it is the second term of Eq. (11). Descending
    it *raises* the likelihood of responses with ``r_i > b_i`` relative to those with
    ``r_i < b_i``, i.e. increases ``E[r_i]`` (decreases ``C_i``), most strongly for
    violated constraints (largest ``w_i``).

    Note the bound ``b_i`` shifts every coefficient by the same constant, which does
    not change the *expected* gradient (``E[d log pi] = 0``); the bounds act through
    the weights. ``loo_baseline=True`` subtracts from each sample's coefficient the
    mean coefficient of the *other* samples (leave-one-out, still unbiased; needs
    ``B >= 2``) to reduce variance -- an addition, not in the paper.

    Args:
        seq_logprobs_norm: ``[B]`` mean token log-prob of each sampled response (carries grad).
        rewards: ``[B, k]`` constraint rewards ``r_i(y_b|x_b)`` (already signed, see
            :func:`interval_constraint`).
        bounds: ``[k]`` ``b_i``.
        weights: ``[k]`` non-negative constraint weights (detached).

    Returns:
        0-d loss. Its *value* is not ``G_mu``; only its gradient is meaningful.
    """
    b, w = _check_constraint_batch(seq_logprobs_norm, rewards, bounds, weights)
    c = (b - rewards.detach().to(b.dtype)) @ w  # [B]: sum_i w_i (b_i - r_i)
    B = c.shape[0]
    if loo_baseline:
        if B < 2:
            raise ValueError("loo_baseline needs at least 2 samples")
        c = c - (c.sum() - c) / (B - 1)
    return (c * seq_logprobs_norm).mean()


def mu_schedule(step: int, total_steps: int, mu_start: float = 1.0, mu_end: float = 1e-6) -> float:
    """Exponentially decayed barrier parameter (L3M Section 5.1: ``mu_t = gamma * mu_{t-1}``;
    Appendix A: "exponentially decay ... from 1 to 1e-6"):

        mu(step) = mu_start * (mu_end / mu_start) ** (step / total_steps),

    with ``step`` clamped to ``[0, total_steps]``, so ``mu(0) = mu_start`` and
    ``mu(total_steps) = mu_end``. ``total_steps = 0`` gives ``mu_end``.
    """
    mu_start, mu_end = float(mu_start), float(mu_end)
    if not (mu_start > 0 and mu_end > 0 and math.isfinite(mu_start) and math.isfinite(mu_end)):
        raise ValueError(f"mu_start and mu_end must be finite and > 0; got {mu_start}, {mu_end}")
    if int(total_steps) < 0:
        raise ValueError(f"total_steps must be >= 0; got {total_steps}")
    if int(total_steps) == 0:
        return mu_end
    frac = min(max(float(step) / float(total_steps), 0.0), 1.0)
    if frac == 1.0:
        return mu_end
    return mu_start * (mu_end / mu_start) ** frac


def interval_constraint(lo: float, hi: float) -> list[tuple[float, float]]:
    """``lo <= r <= hi`` as two ``(sign, bound)`` constraints in the form ``sign * r >= bound``:
    ``[(+1, lo), (-1, -hi)]`` (L3M Section 6.2: ``r_1 = |y| >= l_low``, ``r_2 = -|y| >= -l_high``).
    """
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"interval bounds must be finite; got [{lo}, {hi}]")
    if lo > hi:
        raise ValueError(f"empty interval: lo={lo} > hi={hi}")
    return [(1.0, lo), (-1.0, -hi)]


def signed_constraint_rewards(
    raw_rewards: torch.Tensor, constraints: Sequence[tuple[float, float]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``(sign, bound)`` constraints (e.g. from :func:`interval_constraint`) to one raw
    reward per sample: ``[B] -> (rewards [B, k] = sign_i * r, bounds [k])``."""
    if raw_rewards.dim() != 1:
        raise ValueError(f"raw_rewards must be [B]; got {tuple(raw_rewards.shape)}")
    if len(constraints) == 0:
        raise ValueError("need at least one (sign, bound) constraint")
    signs = torch.tensor([float(s) for s, _ in constraints], dtype=raw_rewards.dtype, device=raw_rewards.device)
    bounds = torch.tensor([float(b) for _, b in constraints], dtype=raw_rewards.dtype, device=raw_rewards.device)
    return raw_rewards.unsqueeze(1) * signs, bounds


def lagrangian_loss(
    task_loss: torch.Tensor,
    seq_logprobs_norm: torch.Tensor,
    rewards: torch.Tensor,
    bounds: torch.Tensor | Sequence[float],
    multipliers: torch.Tensor | Sequence[float],
) -> torch.Tensor:
    """Primal loss of the min-max baseline: the Lagrangian of L3M Eq. (8),

        L(theta) + sum_i lambda_i C_i(theta),

    with ``dC_i`` estimated by REINFORCE on length-normalised log-likelihoods (Eq. 12)
    -- i.e. ``task_loss + l3m_constraint_loss(..., weights=multipliers)``. The
    multipliers are treated as constants here and updated by :func:`update_multipliers`.
    """
    if task_loss.dim() != 0:
        raise ValueError(f"task_loss must be a 0-d tensor; got shape {tuple(task_loss.shape)}")
    return task_loss + l3m_constraint_loss(seq_logprobs_norm, rewards, bounds, multipliers)


def update_multipliers(
    multipliers: torch.Tensor, constraint_values: torch.Tensor, lr: float
) -> torch.Tensor:
    """Projected gradient *ascent* on the Lagrangian in the multipliers (min-max baseline):

        lambda_i <- max(0, lambda_i + lr * C_i),

    since ``d(Lagrangian)/d lambda_i = C_i``; violated constraints (``C_i > 0``) gain
    weight, satisfied ones decay to 0. Returns a new detached ``[k]`` tensor.
    """
    lam = multipliers.detach()
    c = constraint_values.detach().to(lam.device, lam.dtype)
    if lam.dim() != 1 or c.shape != lam.shape:
        raise ValueError(f"multipliers and constraint_values must both be [k]; got {tuple(lam.shape)}, {tuple(c.shape)}")
    if float(lr) < 0:
        raise ValueError(f"lr must be >= 0; got {lr}")
    return torch.clamp(lam + float(lr) * c, min=0.0)

"""Advantage estimators and the uniform estimator interface.

Uniform estimator signature
---------------------------
Every entry of :data:`rlcustom.registry.ADV_ESTIMATORS` is called by the trainer
the same way, with keyword arguments only::

    advantages, returns = estimator(
        token_rewards=...,  # [B, T] float, per-token rewards (score at the last
                            #        valid token, minus any KL penalty)
        values=...,         # [B, T] float critic values, or None without a critic
        mask=...,           # [B, T] 1 on valid (generated) tokens
        scores=...,         # [B]    float sequence-level scores (reward model / verifier)
        group_ids=...,      # [B]    long, samples of the same prompt share an id
        gamma=...,          # float  discount
        lam=...,            # float  GAE lambda
        **options,          # estimator-specific options (grpo: eps, scale), declared by the estimator
    )
    # advantages: [B, T] float, 0 on masked positions
    # returns:    [B, T] float value targets, or None for critic-free estimators

An estimator takes the seven uniform arguments by name and declares its own options; nothing is
swallowed, so a misspelt option is a TypeError. To add one (in a module that :mod:`rlcustom.builtins`
or your plugin imports)::

    from rlcustom.registry import ADV_ESTIMATORS

    @ADV_ESTIMATORS.register("my_adv")
    def my_adv(*, token_rewards, values, mask, scores, group_ids, gamma, lam):
        adv = ...                                  # [B, T]
        return adv * mask, None

A sequence-level estimator (one number per sample) is one line with :func:`sequence_estimator`::

    ADV_ESTIMATORS.register("my_seq")(sequence_estimator("my_seq", lambda scores, group_ids: ...))

Registered here: ``"grpo"``, ``"rloo"``, ``"reinforce"``; ``"gae"`` lives in
:mod:`rlcustom.algos.gae` (imported below, so importing this module registers all four).

When ``scores`` is None the critic-free estimators use the per-sequence sum of
``token_rewards`` over valid tokens as the score.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from rlcustom.algos import gae as _gae  # noqa: F401  (registers "gae")
from rlcustom.algos.masked import masked_sum, masked_whiten
from rlcustom.registry import ADV_ESTIMATORS

__all__ = [
    "group_stats",
    "grpo_advantages",
    "rloo_advantages",
    "broadcast_to_tokens",
    "whiten_advantages",
    "grpo_estimator",
    "rloo_estimator",
    "reinforce_estimator",
    "sequence_estimator",
]


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype.is_floating_point else x.to(torch.get_default_dtype())


def group_stats(scores: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group statistics, vectorised with ``index_add`` (no Python loop).

    Args:
        scores: ``[B]`` float scores.
        group_ids: ``[B]`` integer group labels (any values, need not be contiguous or sorted).

    Returns:
        ``(count, sum, sum_sq_dev)`` each ``[B]``: for every sample, the size of its
        group, the sum of its group's scores and the sum of squared deviations from
        its group's mean.
    """
    if scores.dim() != 1 or group_ids.shape != scores.shape:
        raise ValueError(f"scores and group_ids must both be [B]; got {tuple(scores.shape)}, {tuple(group_ids.shape)}")
    scores = _float(scores)
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    n_groups = uniq.numel()
    count = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add_(0, inv, torch.ones_like(scores))
    total = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add_(0, inv, scores)
    mean = total / count
    sq = (scores - mean[inv]) ** 2
    ssd = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add_(0, inv, sq)
    return count[inv], total[inv], ssd[inv]


def grpo_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    eps: float = 1e-6,
    scale: bool = True,
) -> torch.Tensor:
    """Group-relative advantages of GRPO (Shao et al. 2024, "DeepSeekMath", Sec. 4.1.2,
    outcome supervision): ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)``.

    ``std`` is the *unbiased* (Bessel-corrected, ``n - 1``) sample standard deviation,
    as ``torch.std`` in TRL's ``GRPOTrainer`` and verl's GRPO estimator. A group of
    size 1 has no spread: its std is taken as 0 and its advantage is 0 (verl instead
    returns the raw score for singleton groups). With ``scale=False`` only the mean is
    subtracted (Dr. GRPO, Liu et al. 2025).

    Args:
        scores: ``[B]`` sequence scores.
        group_ids: ``[B]`` LongTensor; samples of the same prompt share an id.
        eps: added to the std in the denominator.
        scale: divide by the group std.

    Returns:
        ``[B]`` per-sequence advantages.
    """
    scores = _float(scores)
    count, total, ssd = group_stats(scores, group_ids)
    adv = scores - total / count
    if scale:
        var = torch.where(count > 1, ssd / (count - 1).clamp(min=1), torch.zeros_like(ssd))
        adv = adv / (var.sqrt() + eps)
    return adv


def rloo_advantages(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019, "Buy 4 REINFORCE samples,
    get a baseline for free!"; Ahmadian et al. 2024, "Back to Basics", Eq. 7):
    ``A_i = r_i - 1/(k-1) * sum_{j != i} r_j`` within each group of size ``k``.

    A group of size 1 has no other sample to form a baseline: its advantage is 0.

    Returns:
        ``[B]`` per-sequence advantages.
    """
    scores = _float(scores)
    count, total, _ = group_stats(scores, group_ids)
    others = (total - scores) / (count - 1).clamp(min=1)
    return torch.where(count > 1, scores - others, torch.zeros_like(scores))


def broadcast_to_tokens(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Copy a per-sequence value ``[B]`` onto every valid token of ``mask [B, T]``; 0 elsewhere."""
    if adv.dim() != 1 or mask.dim() != 2 or mask.shape[0] != adv.shape[0]:
        raise ValueError(f"expected adv [B] and mask [B, T]; got {tuple(adv.shape)}, {tuple(mask.shape)}")
    adv = _float(adv)
    return torch.where(mask.bool(), adv[:, None].expand(mask.shape), torch.zeros((), dtype=adv.dtype, device=adv.device))


def whiten_advantages(adv: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise advantages to zero mean / unit (unbiased) variance over the valid tokens
    of the whole batch (the standard PPO advantage normalisation, e.g. OpenAI baselines
    and Ziegler et al. 2019); masked positions come back 0. Thin wrapper over
    :func:`rlcustom.algos.masked.masked_whiten`.
    """
    return masked_whiten(adv, mask, shift_mean=shift_mean, eps=eps)


def _sequence_scores(scores: torch.Tensor | None, token_rewards: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
    if scores is not None:
        return _float(scores)
    if token_rewards is None:
        raise ValueError("need scores or token_rewards")
    return masked_sum(_float(token_rewards), mask, dim=-1)


def _need_groups(name: str, group_ids: torch.Tensor | None) -> torch.Tensor:
    if group_ids is None:
        raise ValueError(f"the {name!r} advantage estimator needs group_ids")
    return group_ids


def sequence_estimator(name: str, fn: Callable[..., torch.Tensor], *, grouped: bool = True):
    """The uniform estimator of a sequence-level one: ``fn(scores [B], group_ids [B], **options) -> [B]``
    (``fn(scores, **options)`` when not ``grouped``) broadcast to the valid tokens; no returns. Critic-free:
    ``values``, ``gamma`` and ``lam`` are accepted (the uniform call) and unused. ``options`` go to ``fn``,
    whose own signature rejects a misspelt one."""

    def estimator(*, token_rewards: torch.Tensor | None = None, values: torch.Tensor | None = None,
                  mask: torch.Tensor, scores: torch.Tensor | None = None, group_ids: torch.Tensor | None = None,
                  gamma: float = 1.0, lam: float = 1.0, **options: Any) -> tuple[torch.Tensor, None]:
        s = _sequence_scores(scores, token_rewards, mask)
        adv = fn(s, _need_groups(name, group_ids), **options) if grouped else fn(s, **options)
        return broadcast_to_tokens(adv, mask), None

    estimator.__name__ = f"{name}_estimator"
    estimator.__doc__ = f"Uniform-signature {name}: :func:`{fn.__name__}` broadcast to tokens; no returns."
    return estimator


def _identity(scores: torch.Tensor) -> torch.Tensor:
    """Vanilla REINFORCE (Williams 1992) without baseline: the sequence score itself."""
    return scores


grpo_estimator = ADV_ESTIMATORS.register("grpo")(sequence_estimator("grpo", grpo_advantages))
rloo_estimator = ADV_ESTIMATORS.register("rloo")(sequence_estimator("rloo", rloo_advantages))
reinforce_estimator = ADV_ESTIMATORS.register("reinforce")(sequence_estimator("reinforce", _identity, grouped=False))

"""Learner objectives over :mod:`rlcustom.algos.policy_objectives` (DAPO / dual-clip / Dr. GRPO's clipped
loss as ``policy_clip``, GSPO's sequence-ratio loss as ``gspo``): each runs the forward pass it needs."""
from __future__ import annotations

from typing import Any

import torch

from rlcustom.algos.off_policy import old_logprobs, update_logprobs_stat
from rlcustom.algos.policy_objectives import clipped_policy_loss, gspo_loss
from rlcustom.objectives.policy import tis_weights, with_entropy_and_kl
from rlcustom.registry import OBJECTIVES


@OBJECTIVES.register("policy_clip")
def policy_clip(model, batch: dict, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
                dual_clip_c: float | None = None, agg: str = "token", max_len: int | None = None,
                entropy_coef: float = 0.0, kl_coef: float = 0.0, kl_estimator: str = "k3",
                is_cap: float | None = None, **_: Any) -> tuple[torch.Tensor, dict]:
    """:func:`clipped_policy_loss` (DAPO, dual-clip, Dr. GRPO) + optional entropy bonus and KL loss.
    With ``agg`` ``const``/``seq``/``seq_sum`` the trainer passes ``weighting="rows"`` (exact over micro-batches).
    ``is_cap``: truncated importance weights on each token's loss (:func:`~rlcustom.objectives.policy.tis_weights`)."""
    from rlcustom.models.forward import response_logprobs

    out = response_logprobs(model, batch, return_logits=entropy_coef > 0)
    lp, logits = out if entropy_coef > 0 else (out, None)
    old = old_logprobs(batch, lp)
    loss, st = clipped_policy_loss(lp, old, batch["advantages"], batch["response_mask"],
                                   clip_eps=clip_eps, clip_eps_high=clip_eps_high, dual_clip_c=dual_clip_c,
                                   agg=agg, max_len=max_len, token_weights=tis_weights(batch, is_cap, old))
    stats = {f"train/{k}": float(v) for k, v in st.items()} | update_logprobs_stat(batch, lp)
    return with_entropy_and_kl(model, batch, lp, logits, loss, stats,
                                entropy_coef=entropy_coef, kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg)


@OBJECTIVES.register("gspo")
def gspo(model, batch: dict, *, clip_eps: float = 3e-4, clip_eps_high: float | None = 4e-4,
         entropy_coef: float = 0.0, kl_coef: float = 0.0, kl_estimator: str = "k3", **_: Any) -> tuple[torch.Tensor, dict]:
    """:func:`gspo_loss` + optional entropy bonus and KL loss (sequence means: weighs by rows)."""
    from rlcustom.models.forward import response_logprobs

    out = response_logprobs(model, batch, return_logits=entropy_coef > 0)
    lp, logits = out if entropy_coef > 0 else (out, None)
    loss, st = gspo_loss(lp, old_logprobs(batch, lp), batch["advantages"], batch["response_mask"],
                         clip_eps=clip_eps, clip_eps_high=clip_eps_high)
    stats = {f"train/{k}": float(v) for k, v in st.items()} | update_logprobs_stat(batch, lp)
    return with_entropy_and_kl(model, batch, lp, logits, loss, stats,
                                entropy_coef=entropy_coef, kl_coef=kl_coef, kl_estimator=kl_estimator, agg="seq")


gspo.weighting = "rows"

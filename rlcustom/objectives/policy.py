"""Policy objectives: REINFORCE, SFT, PPO-clip, DPO and the Bradley-Terry reward model (see :mod:`rlcustom.objectives`)."""
from __future__ import annotations

import torch

from rlcustom.algos.masked import masked_mean
from rlcustom.models.forward import response_logprobs
from rlcustom.algos.ppo import ppo_policy_loss
from rlcustom.algos.preference import bradley_terry_loss, dpo_loss
from rlcustom.registry import register_objective


def tis_weights(batch: dict, is_cap: float | None, old: torch.Tensor | None = None) -> torch.Tensor | None:
    """Truncated importance weights ``min(pi_old / mu, is_cap)`` (:mod:`rlcustom.algos.off_policy`) from
    ``old`` (pi_old, the learner's; default the batch's ``logprobs``) and the batch's ``behaviour_logprobs``
    (mu, the engine's); None when off."""
    if is_cap is None:
        return None
    from rlcustom.algos.off_policy import truncated_is_weights

    if "behaviour_logprobs" not in batch:
        raise ValueError("is_cap needs batch['behaviour_logprobs'] (the rollout engine's log-probs)")
    old = batch["logprobs"] if old is None else old
    return truncated_is_weights(old, batch["behaviour_logprobs"], batch["response_mask"], is_cap)


@register_objective("reinforce")
def reinforce(model, batch: dict, *, is_cap: float | None = None, **_) -> tuple[torch.Tensor, dict]:
    """Vanilla policy gradient: -A * log pi(y_t), token-mean over the batch (Williams 1992); with ``is_cap``,
    each token's term times the truncated importance weight ``w_t`` (:mod:`rlcustom.algos.off_policy`; pi_old
    from this forward when the batch says so: :func:`~rlcustom.algos.off_policy.old_logprobs`)."""
    from rlcustom.algos.off_policy import old_logprobs, update_logprobs_stat

    lp = response_logprobs(model, batch)
    mask = batch["response_mask"]
    adv = batch["advantages"]
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(lp)
    w = tis_weights(batch, is_cap, old_logprobs(batch, lp) if is_cap is not None else None)
    loss = -masked_mean(adv * lp if w is None else w * adv * lp, mask)
    return loss, {"train/pg_loss": float(loss.detach()), "train/logprob": float(masked_mean(lp.detach(), mask)),
                  **update_logprobs_stat(batch, lp)}


@register_objective("sft")
def sft(model, batch: dict, **_) -> tuple[torch.Tensor, dict]:
    """Next-token NLL of the response tokens only (prompt masked out)."""
    lp = response_logprobs(model, batch)
    loss = -masked_mean(lp, batch["response_mask"])
    return loss, {"train/nll": float(loss.detach())}


@register_objective("ppo_clip", loss=ppo_policy_loss)
def ppo_clip(model, batch: dict, *, clip_eps: float = 0.2, clip_eps_high: float | None = None,
             entropy_coef: float = 0.0, kl_coef: float = 0.0, kl_estimator: str = "k3", agg: str = "token",
             is_cap: float | None = None, **_) -> tuple[torch.Tensor, dict]:
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7), optional entropy bonus and KL-to-reference loss.

    ``batch`` carries ``logprobs`` (pi_old; or the :data:`~rlcustom.algos.off_policy.PI_OLD_FROM_UPDATE` flag:
    pi_old is this forward's own, detached), ``advantages`` [B, T] and,
    when ``kl_coef > 0``, ``ref_logprobs`` (KL as a loss term instead of a reward penalty). With ``is_cap``,
    each token's loss is weighted by ``min(pi_old / mu, is_cap)``, ``mu`` = ``behaviour_logprobs`` (TIS).
    """
    from rlcustom.algos.off_policy import old_logprobs, update_logprobs_stat
    from rlcustom.algos.ppo import ppo_policy_loss

    need_logits = entropy_coef > 0
    out = response_logprobs(model, batch, return_logits=need_logits)
    lp, logits = out if need_logits else (out, None)
    old = old_logprobs(batch, lp)
    loss, st = ppo_policy_loss(lp, old, batch["advantages"], batch["response_mask"],
                               clip_eps=clip_eps, clip_eps_high=clip_eps_high, agg=agg,
                               token_weights=tis_weights(batch, is_cap, old))
    stats = {f"train/{k}": float(v) for k, v in st.items()} | update_logprobs_stat(batch, lp)
    return with_entropy_and_kl(model, batch, lp, logits, loss, stats,
                               entropy_coef=entropy_coef, kl_coef=kl_coef, kl_estimator=kl_estimator, agg=agg)


def with_entropy_and_kl(model, batch: dict, lp, logits, loss, stats, *, entropy_coef: float, kl_coef: float,
                         kl_estimator: str, agg: str):
    """``loss - entropy_coef * H + kl_coef * KL(pi || ref)`` with their stats, the add-on every clipped policy
    objective shares (``agg='const'``, Dr. GRPO's constant normaliser, aggregates these two per token)."""
    from rlcustom.algos.kl import kl_loss
    from rlcustom.algos.ppo import entropy_bonus

    mask = batch["response_mask"]
    kagg = "token" if agg == "const" else agg
    if entropy_coef > 0:
        ent = entropy_bonus(logits, mask, agg=kagg)
        loss = loss - entropy_coef * ent
        stats["train/entropy"] = float(ent)
    if kl_coef > 0:
        kl = kl_loss(lp, batch["ref_logprobs"], mask, estimator=kl_estimator, agg=kagg)
        loss = loss + kl_coef * kl
        stats["train/kl_loss"] = float(kl)
    return loss, stats


@register_objective("dpo", loss=dpo_loss, weighting="rows")  # a sequence-level loss
def dpo(model, batch: dict, *, beta: float = 0.1, label_smoothing: float = 0.0, **_) -> tuple[torch.Tensor, dict]:
    """DPO (Rafailov et al. 2023, Eq. 7). Rows are interleaved pairs: even rows chosen, odd rows the
    rejected answer to the same prompt (so sharding by even row counts keeps pairs whole);
    ``ref_logps`` [B] holds the reference model's sequence log-probs."""
    from rlcustom.algos.preference import dpo_loss, sequence_logprobs

    lp = response_logprobs(model, batch)
    seq = sequence_logprobs(lp, batch["response_mask"])
    if seq.shape[0] % 2:
        raise ValueError("dpo: a batch shard has an odd number of rows; use even micro_batch_size and batch sizes")
    ref = batch["ref_logps"]
    loss, st = dpo_loss(seq[0::2], seq[1::2], ref[0::2], ref[1::2], beta=beta, label_smoothing=label_smoothing)
    return loss, {f"train/{k}": float(v) for k, v in st.items()} | {"train/dpo_loss": float(loss.detach())}



@register_objective("bt_reward", loss=bradley_terry_loss, weighting="rows")
def bt_reward(model, batch: dict, *, margin: float | None = None, **_) -> tuple[torch.Tensor, dict]:
    """Bradley-Terry reward-model loss (Ouyang et al. 2022, Eq. 1) on interleaved (chosen, rejected) rows;
    ``model`` returns one scalar per sequence (a :class:`~rlcustom.models.heads.RewardModel`)."""
    from rlcustom.algos.preference import bradley_terry_loss
    from rlcustom.models.forward import position_ids

    scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=position_ids(batch["attention_mask"]))
    if scores.shape[0] % 2:
        raise ValueError("bt_reward: a batch shard has an odd number of rows; use even micro_batch_size")
    loss, acc = bradley_terry_loss(scores[0::2], scores[1::2], margin=margin)
    return loss, {"train/bt_loss": float(loss.detach()), "train/pair_accuracy": float(acc),
                  "train/reward_margin": float((scores[0::2] - scores[1::2]).detach().mean())}

"""Preference and likelihood losses: Bradley-Terry reward modelling, DPO, SFT.

* :func:`bradley_terry_loss`: reward-model loss of Ouyang et al. 2022 ("InstructGPT"),
  Eq. 1, under the Bradley-Terry model (Bradley & Terry 1952); optional margin as in
  Llama 2 (Touvron et al. 2023, Eq. 2).
* :func:`dpo_loss`: Direct Preference Optimization, Rafailov et al. 2023, Eq. 7, with the
  conservative label smoothing of cDPO (Mitchell 2023) as in TRL.
* :func:`sft_loss`: next-token negative log-likelihood on target tokens.
* :func:`token_logprobs_from_logits`, :func:`sequence_logprobs`: log-likelihood helpers.

Applied by the learner objectives ``bt_reward``, ``dpo`` and ``sft`` (:mod:`rlcustom.objectives`).
Scalar statistics are returned as detached 0-d tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rlcustom.algos.masked import masked_mean, masked_sum

__all__ = [
    "bradley_terry_loss",
    "dpo_loss",
    "sequence_logprobs",
    "token_logprobs_from_logits",
    "sft_loss",
]


def bradley_terry_loss(
    chosen_scores: torch.Tensor,
    rejected_scores: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bradley-Terry pairwise reward-model loss (Ouyang et al. 2022, Eq. 1):

        loss = -mean( log sigmoid(r_chosen - r_rejected [- margin]) )

    The optional ``margin`` (scalar or ``[B]``) is Llama 2's margin loss (Touvron et al.
    2023, Eq. 2). Returns ``(loss, accuracy)`` where accuracy is the fraction of pairs
    with ``r_chosen > r_rejected`` strictly (ties count as wrong; margin not applied).
    """
    diff = chosen_scores - rejected_scores
    logits = diff if margin is None else diff - margin
    loss = -F.logsigmoid(logits).mean()
    accuracy = (diff.detach() > 0).to(diff.dtype).mean()
    return loss, accuracy


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPO loss (Rafailov et al. 2023, Eq. 7):

        h    = beta * [ (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)) ]
        loss = -mean( (1 - ls) * log sigmoid(h) + ls * log sigmoid(-h) )

    ``ls = label_smoothing`` is the probability that a preference label is flipped
    (cDPO, Mitchell 2023; TRL's ``sigmoid`` loss); ``ls = 0`` is plain DPO. All inputs are
    ``[B]`` sequence log-probabilities (see :func:`sequence_logprobs`).

    Returns:
        ``(loss, stats)``; stats (means over the batch, detached): ``chosen_rewards`` and
        ``rejected_rewards`` (implicit rewards ``beta * (log pi - log ref)``, Eq. 5),
        ``reward_accuracy`` (fraction with chosen reward > rejected reward),
        ``reward_margin`` (mean of chosen minus rejected reward).
    """
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    h = beta * (chosen_logratio - rejected_logratio)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    loss = losses.mean()
    with torch.no_grad():
        chosen_rewards = beta * chosen_logratio.detach()
        rejected_rewards = beta * rejected_logratio.detach()
        stats = {
            "chosen_rewards": chosen_rewards.mean(),
            "rejected_rewards": rejected_rewards.mean(),
            "reward_accuracy": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
            "reward_margin": (chosen_rewards - rejected_rewards).mean(),
        }
    return loss, stats


def sequence_logprobs(token_logprobs: torch.Tensor, mask: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Sequence log-likelihood from per-token log-probs ``[B, T] -> [B]``.

    ``normalize=False``: ``sum_t log p(y_t | y_<t)`` over valid tokens (DPO's ``log pi(y|x)``).
    ``normalize=True``: the per-token mean, the length-normalised log-likelihood that the
    L3M paper uses as a reward (also the reward of SimPO, Meng et al. 2024, up to beta).
    A row with no valid token gives 0.
    """
    if normalize:
        return masked_mean(token_logprobs, mask, dim=-1)
    return masked_sum(token_logprobs, mask, dim=-1)


def token_logprobs_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log softmax(logits)[..., label]`` for every position: ``[..., V], [...] -> [...]``.

    Computed as ``logits[label] - logsumexp(logits)`` so no full ``log_softmax`` tensor is
    kept. For float32/float64 logits that is all; half/bfloat16 logits are upcast to
    float32 one leading row at a time (``logsumexp`` in bf16 is too imprecise), so peak
    extra memory is one row's float32 copy, and the result is float32. Labels must be
    valid indices (replace ignore-index values such as -100 before calling).
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must have the logits' shape without the vocab dim; got {tuple(labels.shape)}, {tuple(logits.shape)}")
    labels = labels.long()
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    if logits.dim() == 1:
        return token_logprobs_from_logits(logits.float(), labels)
    rows = []
    for row_logits, row_labels in zip(logits, labels):
        row = row_logits.float()
        rows.append(row.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows) if rows else logits.new_zeros(labels.shape, dtype=torch.float32)


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning loss: token-mean negative log-likelihood of next-token
    prediction (the causal LM objective, Radford et al. 2018, Eq. 1), on target tokens only.

    Args:
        logits: ``[B, L, V]`` model outputs; ``logits[:, t]`` predicts ``input_ids[:, t + 1]``.
        input_ids: ``[B, L]`` the full sequences (prompt + response).
        loss_mask: ``[B, L]`` 1 where ``input_ids`` is a *target* token (e.g. the response),
            0 on prompt and padding positions. ``loss_mask[:, 0]`` is ignored (nothing predicts it).

    Returns:
        0-d loss: mean over all target tokens of the batch (0 if there are none).
    """
    if logits.shape[:-1] != input_ids.shape or input_ids.shape != loss_mask.shape:
        raise ValueError(
            f"expected logits [B, L, V], input_ids and loss_mask [B, L]; got {tuple(logits.shape)}, "
            f"{tuple(input_ids.shape)}, {tuple(loss_mask.shape)}"
        )
    logp = token_logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])
    return -masked_mean(logp, loss_mask[:, 1:])

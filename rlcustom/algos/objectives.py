"""Learner objectives: what ``LearnerActor.train_step(batch, loss_name)`` optimises.

An objective is ``fn(model, batch, **kwargs) -> (loss, stats)``; it runs the
forward it needs (so Q-Adapter can read base and adapted logits in one pass)
and combines the pure math of ``rlcustom.algos``. Register one with
``@OBJECTIVES.register("name")`` and a trainer can ask for it by name.
"""
from __future__ import annotations

import torch

from rlcustom.algos.masked import masked_mean
from rlcustom.models.forward import response_logprobs
from rlcustom.registry import OBJECTIVES


@OBJECTIVES.register("reinforce")
def reinforce(model, batch: dict, **_) -> tuple[torch.Tensor, dict]:
    """Vanilla policy gradient: -A * log pi(y_t), token-mean over the batch (Williams 1992)."""
    lp = response_logprobs(model, batch)
    mask = batch["response_mask"]
    adv = batch["advantages"]
    if adv.dim() == 1:
        adv = adv[:, None].expand_as(lp)
    loss = -masked_mean(adv * lp, mask)
    return loss, {"train/pg_loss": float(loss), "train/logprob": float(masked_mean(lp.detach(), mask))}


@OBJECTIVES.register("sft")
def sft(model, batch: dict, **_) -> tuple[torch.Tensor, dict]:
    """Next-token NLL of the response tokens only (prompt masked out)."""
    lp = response_logprobs(model, batch)
    loss = -masked_mean(lp, batch["response_mask"])
    return loss, {"train/nll": float(loss)}

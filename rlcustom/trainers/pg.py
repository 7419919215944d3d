"""Minimal policy gradient (REINFORCE with a group baseline) on the shared runtime.

The smallest :class:`~rlcustom.trainers.pipeline.PipelineTrainer`: it writes ``advantages`` and ``update``;
generate, score, filter and sync are the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlcustom.config import positive, register_section
from rlcustom.trainers.base import register_trainer
from rlcustom.trainers.pipeline import PipelineTrainer, Step
from rlcustom.trainers.roles import build_learner, build_reward, build_rollout, first_last


@register_section("pg")
@dataclass(frozen=True)
class PGConfig:
    prompts_per_step: int = field(default=4, metadata=positive)  # prompts per step (x sampling.n samples)
    advantage: str = "rloo"  # a registered advantage estimator: rloo | grpo | reinforce | ...
    check_sync: bool = False  # after each sync, compare rollout vs learner log-probs of a fixed sequence


@register_trainer("pg")
class PGTrainer(PipelineTrainer):
    """REINFORCE (Williams 1992) with a leave-one-out baseline (Ahmadian et al. 2024)."""

    roles_used = ("rollout", "learner", "reward")

    def build(self) -> None:
        self.rollout = build_rollout(self)
        self.learner = build_learner(self)
        self.reward = build_reward(self)

    def advantages(self, s: Step) -> None:
        from rlcustom.registry import ADV_ESTIMATORS

        adv, _ = ADV_ESTIMATORS.get(self.cfg.algo.advantage)(
            token_rewards=None, values=None, mask=s.batch["response_mask"], scores=s.scores,
            group_ids=torch.tensor(s.ro.prompt_index), gamma=1.0, lam=1.0)
        s.batch["advantages"] = adv

    def update(self, s: Step) -> None:
        s.stats |= self.learner_train(s.batch, "reinforce")

    def metrics(self, s: Step) -> dict[str, float]:
        if self.cfg.algo.check_sync:
            s.stats |= self.check_sync(s.ro)
        return s.stats | {"reward/mean": float(s.scores.mean()), "reward/max": float(s.scores.max()),
                          "rollout/response_len": float(s.batch["response_mask"].sum(1).mean())}

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "reward/mean")]

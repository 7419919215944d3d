"""Minimal policy gradient (REINFORCE with a group baseline) on the shared runtime.

The template for every algorithm: generate -> score -> advantages -> train -> sync.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rlcustom.config import positive, register_section
from rlcustom.trainers.base import Trainer, register_trainer
from rlcustom.trainers.roles import build_learner, build_reward, build_rollout, prompt_batch
from rlcustom.trainers.filters import resample_step
from rlcustom.trainers.objective_plan import shape_scores
from rlcustom.trainers.scoring import score_rollouts


@register_section("pg")
@dataclass(frozen=True)
class PGConfig:
    prompts_per_step: int = field(default=4, metadata=positive)  # prompts per step (x sampling.n samples)
    advantage: str = "rloo"  # a registered advantage estimator: rloo | grpo | reinforce | ...
    check_sync: bool = False  # after each sync, compare rollout vs learner log-probs of a fixed sequence
    # reinforce | dapo | gspo | dr_grpo | reinforce_pp | dual_clip | ppo (rlcustom.trainers.objective_plan):
    # the clipped ones use the engine's log-probs as pi_old (one update per batch, so rho starts at 1)
    objective: str = "reinforce"
    objective_kwargs: dict[str, Any] = field(default_factory=dict)
    clip_eps: float = field(default=0.2, metadata=positive)


@register_trainer("pg")
class PGTrainer(Trainer):
    """REINFORCE (Williams 1992) with a leave-one-out baseline (Ahmadian et al. 2024)."""

    roles_used = ("rollout", "learner", "reward")

    def build(self) -> None:
        self.rollout = build_rollout(self)
        self.learner = build_learner(self)
        self.reward = build_reward(self)
        self.prompts = None  # loaded lazily with the rollout's tokenizer
        from rlcustom.trainers.objective_plan import plan_objective

        a = self.cfg.algo
        self.plan = plan_objective(a.objective, a.objective_kwargs, clip_eps=a.clip_eps, agg="token",
                                   max_new_tokens=self.cfg.sampling.max_new_tokens)

    def step(self) -> dict[str, float]:
        from rlcustom.registry import ADV_ESTIMATORS
        import rlcustom.algos.advantages  # noqa: F401  (registers estimators)

        a, plan = self.cfg.algo, self.plan
        prompts = prompt_batch(self, a.prompts_per_step)
        params = self.cfg.sampling.params(seed=self.cfg.seed * 100003 + self.step_idx)
        with self.timer("generate"):
            ro = self.generate(prompts, params)
        with self.timer("score"):
            if plan.dynamic_sampling:  # all-equal groups dropped and refilled (DAPO); constant batch size
                ro, scores, reward_stats = resample_step(self, ro, params, plan, a.prompts_per_step)
            else:
                scores, reward_stats = score_rollouts(self, ro)  # over the reward replicas
                scores = shape_scores(plan, scores, ro, self.cfg.sampling.max_new_tokens)
        batch = ro.padded(self.pad_id)
        adv, _ = ADV_ESTIMATORS.get(plan.advantage or a.advantage)(
            token_rewards=None, values=None, mask=batch["response_mask"], scores=scores,
            group_ids=torch.tensor(ro.prompt_index), gamma=1.0, lam=1.0, **plan.adv_kwargs)
        batch["advantages"] = adv
        with self.timer("train"), self.device_for_training():
            stats = self.learner_train(batch, plan.loss, **plan.loss_kwargs,
                                       **({"weighting": plan.weighting} if plan.weighting else {}))
        with self.timer("sync"):
            stats |= self.sync_weights()
        if a.check_sync:
            stats |= self.check_sync(ro)
        stats |= reward_stats | {"reward/mean": float(scores.mean()), "reward/max": float(scores.max()),
                  "rollout/response_len": float(batch["response_mask"].sum(1).mean())}
        return stats | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        from rlcustom.trainers.roles import first_last

        return [first_last(history, "reward/mean")]

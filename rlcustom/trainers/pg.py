"""Minimal policy gradient (REINFORCE with a group baseline) on the shared runtime.

The smallest :class:`~rlcustom.trainers.pipeline.PipelineTrainer`: it writes ``advantages`` and ``update``;
generate, score, filter and sync are the defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from rlcustom.config import positive, register_section
from rlcustom.trainers.base import register_trainer
from rlcustom.trainers.overlap import OffPolicyConfig
from rlcustom.trainers.pipeline import PipelineTrainer, Step
from rlcustom.trainers.roles import build_learner, build_reward, build_rollout, first_last


@register_section("pg")
@dataclass(frozen=True)
class PGConfig(OffPolicyConfig):
    prompts_per_step: int = field(default=4, metadata=positive)  # prompts per step (x sampling.n samples)
    advantage: str = "rloo"  # a registered advantage estimator: rloo | grpo | reinforce | ...
    check_sync: bool = False  # after each sync, compare rollout vs learner log-probs of a fixed sequence
    # reinforce | dapo | gspo | dr_grpo | reinforce_pp | dual_clip | ppo (rlcustom.trainers.objective_plan):
    # the clipped ones use the engine's log-probs as pi_old (one update per batch, so rho starts at 1)
    objective: str = "reinforce"  # the policy loss: reinforce | dapo | gspo | dr_grpo | reinforce_pp | dual_clip | ppo
    objective_kwargs: dict[str, Any] = field(default_factory=dict)  # overrides of the objective's paper defaults
    clip_eps: float = field(default=0.2, metadata=positive)  # ratio clip of the clipped objectives


@register_trainer("pg")
class PGTrainer(PipelineTrainer):
    """REINFORCE (Williams 1992) with a leave-one-out baseline (Ahmadian et al. 2024)."""

    roles_used = ("rollout", "learner", "reward")
    env_rollouts = True  # rollout.env: episodes scored by their returns, observation tokens masked out

    def build(self) -> None:
        self.rollout = build_rollout(self)
        self.learner = build_learner(self)
        self.reward = build_reward(self)
        from rlcustom.trainers.objective_plan import plan_objective

        a = self.cfg.algo
        self.loss_plan = plan_objective(a.objective, a.objective_kwargs, clip_eps=a.clip_eps, agg="token",
                                   max_new_tokens=self.cfg.sampling.max_new_tokens)
        self.check_off_policy()

    def score(self, s: Step) -> None:
        """Rewards; with DAPO's dynamic sampling, all-equal groups dropped and refilled (constant batch size);
        the objective's score shaping (overlong penalty). Off-policy (overlap or TIS): the learner's log-probs
        of the batch too (``pi_old``, alongside the reward), unless the update's own forward gives them (the
        update is one optimizer step: :meth:`~rlcustom.trainers.overlap.RolloutOverlap.pi_old_from_update`)."""
        from rlcustom.trainers.filters import resample_step
        from rlcustom.trainers.objective_plan import shape_scores

        if self.off_policy:
            s.pi_old_reused = self.pi_old_from_update(one_step=True)  # update(): one learner_train call
            s.stats["train/pi_old_forward"] = 0.0 if s.pi_old_reused else 1.0
        forward = self.off_policy and not s.pi_old_reused
        if self.loss_plan.dynamic_sampling:
            params = s.params if s.params is not None else self.sampling_params()
            s.ro, s.scores, m = resample_step(self, s.ro, params, self.loss_plan, self.cfg.algo.prompts_per_step)
            s.batch, s.stats = s.ro.padded(self.pad_id), s.stats | m
            old = self.groups["learner"].scatter("forward_logprobs", s.batch) if forward else None
        else:
            old = self.groups["learner"].scatter("forward_logprobs", s.batch) if forward else None
            super().score(s)
            s.scores = shape_scores(self.loss_plan, s.scores, s.ro, self.cfg.sampling.max_new_tokens)
        if old is not None:
            s.old_lp = self.groups["learner"].gather(old, "learner logprobs")
            s.rows.append("old_lp")

    def advantages(self, s: Step) -> None:
        from rlcustom.registry import ADV_ESTIMATORS

        adv, _ = ADV_ESTIMATORS.get(self.loss_plan.advantage or self.cfg.algo.advantage)(
            token_rewards=None, values=None, mask=s.batch["response_mask"], scores=s.scores,
            group_ids=torch.tensor(s.ro.prompt_index), gamma=1.0, lam=1.0, **self.loss_plan.adv_kwargs)
        s.batch["advantages"] = adv
        if s.pi_old_reused:  # pi_old from the update's own forward; the engine's as behaviour log-probs
            s.batch = self.pi_old_from_update_batch(s)
        elif self.off_policy:  # pi_old = the learner's, the engine's as behaviour log-probs (TIS, metrics)
            s.batch |= self.off_policy_batch(s, s.old_lp)

    def update(self, s: Step) -> None:
        p = self.loss_plan
        stats = self.learner_train(s.batch, p.loss, **p.loss_kwargs, **self.is_kwargs(),
                                   **({"weighting": p.weighting} if p.weighting else {}))
        s.stats |= self.pi_old_update_stats(s, stats)  # the gap and TIS metrics when pi_old came from it

    def metrics(self, s: Step) -> dict[str, float]:
        if self.cfg.algo.check_sync:
            s.stats |= self.check_sync(s.ro)
        return s.stats | {"reward/mean": float(s.scores.mean()), "reward/max": float(s.scores.max()),
                          "rollout/response_len": float(s.batch["response_mask"].sum(1).mean())}

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "reward/mean")]

"""Minimal policy gradient (REINFORCE with a group baseline) on the shared runtime.

The template for every algorithm: generate -> score -> advantages -> train -> sync.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlcustom.config import positive, register_section
from rlcustom.trainers.base import Trainer, register_trainer
from rlcustom.trainers.roles import build_learner, build_reward, build_rollout, prompt_batch


@register_section("pg")
@dataclass(frozen=True)
class PGConfig:
    prompts_per_step: int = field(default=4, metadata=positive)  # prompts per step (x sampling.n samples)
    advantage: str = "rloo"  # a registered advantage estimator: rloo | grpo | reinforce | ...
    check_sync: bool = False  # after each sync, compare rollout vs learner log-probs of a fixed sequence


@register_trainer("pg")
class PGTrainer(Trainer):
    """REINFORCE (Williams 1992) with a leave-one-out baseline (Ahmadian et al. 2024)."""

    roles_used = ("rollout", "learner", "reward")

    def build(self) -> None:
        self.rollout = build_rollout(self)
        self.learner = build_learner(self)
        self.reward = build_reward(self)
        self.prompts = None  # loaded lazily with the rollout's tokenizer

    def step(self) -> dict[str, float]:
        from rlcustom.registry import ADV_ESTIMATORS
        import rlcustom.algos.advantages  # noqa: F401  (registers estimators)

        a = self.cfg.algo
        prompts = prompt_batch(self, a.prompts_per_step)
        with self.timer("generate"):
            ro = self.generate(prompts, self.cfg.sampling.params(seed=self.cfg.seed * 100003 + self.step_idx))
        with self.timer("score"):
            scores = torch.tensor(self.reward.run("score", ro)[0], dtype=torch.float32)
        batch = ro.padded(self.pad_id)
        adv, _ = ADV_ESTIMATORS.get(a.advantage)(
            token_rewards=None, values=None, mask=batch["response_mask"], scores=scores,
            group_ids=torch.tensor(ro.prompt_index), gamma=1.0, lam=1.0)
        batch["advantages"] = adv
        with self.timer("train"), self.device_for_training():
            stats = self.learner_train(batch, "reinforce")
        with self.timer("sync"):
            stats |= self.sync_weights()
        if a.check_sync:
            stats |= self.check_sync(ro)
        stats |= {"reward/mean": float(scores.mean()), "reward/max": float(scores.max()),
                  "rollout/response_len": float(batch["response_mask"].sum(1).mean())}
        return stats | self.timer.summary()

    def summary(self, history: list[dict]) -> list[str]:
        from rlcustom.trainers.roles import first_last

        return [first_last(history, "reward/mean")]

"""Best-of-N: sample N completions per prompt, score them, keep the best (Nakano et al. 2021).

As a trainer it labels a prompt set (JSONL of best completions, reusable as SFT
data); :func:`best_of_n` is the same selection as a decoder over any engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch

from rlcustom.config import positive, register_section
from rlcustom.trainers.base import Trainer, register_trainer
from rlcustom.trainers.roles import build_reward, build_rollout, first_last


def best_of_n(rollouts, scores: list[float]) -> tuple[list[int], list[float]]:
    """Index of the best-scoring sample per prompt (first on ties) and its score."""
    best: dict[int, int] = {}
    for i, p in enumerate(rollouts.prompt_index):
        if p not in best or scores[i] > scores[best[p]]:
            best[p] = i
    idx = [best[p] for p in sorted(best)]
    return idx, [scores[i] for i in idx]


@register_section("best_of_n")
@dataclass(frozen=True)
class BestOfNConfig:
    n: int = field(default=8, metadata=positive)  # samples per prompt
    prompts_per_step: int = field(default=8, metadata=positive)  # prompts sampled per step (x algo.n samples)


@register_trainer("best_of_n")
class BestOfNTrainer(Trainer):
    roles_used = ("rollout", "reward")
    stateful_roles = ()

    def build(self) -> None:
        build_rollout(self)
        build_reward(self)
        self.out_path = self.out_dir / "best_of_n.jsonl"

    def step(self) -> dict[str, float]:
        a = self.cfg.algo
        with self.timer("generate"):
            ro = self.rollouts(self.sampler.take(a.prompts_per_step),
                               self.cfg.sampling.params(seed=self.cfg.seed * 100003 + self.step_idx).with_(n=a.n))
        with self.timer("score"):
            g = self.groups["reward"]
            scores = g.gather(g.scatter("score", ro), "reward")
        idx, best = best_of_n(ro, scores)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.out_path.open("a") as f:
            for i in idx:
                f.write(json.dumps({"prompt_ids": ro.prompt_ids[i], "completion": ro.texts[i],
                                    "reward": scores[i], "step": self.step_idx + 1}) + "\n")
        s = torch.tensor(scores)
        return self.timer.summary() | {"reward/mean": float(s.mean()), "reward/best_of_n": float(torch.tensor(best).mean())}

    def summary(self, history: list[dict]) -> list[str]:
        return [first_last(history, "reward/best_of_n"), f"best completions: {self.out_path}"]

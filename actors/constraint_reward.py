"""L3M's reward role: every distinct constraint reward scores each rollout (one in-process RewardActor per spec)."""
from __future__ import annotations

from rlcustom.actors.base import ActorBase


class ConstraintRewardActor(ActorBase):
    """Scores rollouts with every distinct constraint reward: one RewardActor (in-process) per spec."""

    role = "reward"

    def __init__(self, scorers: list[dict], *, tokenizer_path: str, seed: int = 0, rank: int = 0,
                 num_threads: int | None = None) -> None:
        from rlcustom.actors.reward import RewardActor

        super().__init__(seed=seed, rank=rank, num_threads=num_threads)
        self.scorers = [RewardActor(s["spec"], model_path=s["model_path"], url=s["url"], kwargs=s["kwargs"],
                                    tokenizer_path=tokenizer_path, seed=seed, rank=rank) for s in scorers]

    def score(self, rollouts) -> list[list[float]]:
        """``[B][n_scorers]`` raw rewards."""
        cols = [s.score(rollouts) for s in self.scorers]
        return [list(row) for row in zip(*cols)]

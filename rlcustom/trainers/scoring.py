"""The reward role's scores for a step, with the metrics of verifiable rewards (reasons, components)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from rlcustom.trainers.base import Trainer

__all__ = ["scatter_scores", "gather_scores", "score_rollouts", "settle"]


def settle(group, refs: list, sequential: bool) -> list:
    """``refs`` once they have finished (or ``group``'s call timeout passed: its gather then raises) when
    scoring is ``sequential`` (the next scorer's forward then starts on a free device), else at once
    (scorers on separate devices overlap)."""
    if sequential and refs:
        group.wait_all(refs)
    return refs


def scatter_scores(trainer: "Trainer", ro, role: str = "reward") -> list:
    """Futures of the reward replicas' :meth:`RewardActor.score_details` over the rows of ``ro`` (``score``
    for a reward actor without details, e.g. L3M's constraint rewards)."""
    g = trainer.groups[role]
    return g.scatter("score_details" if hasattr(g.actors[0], "score_details") else "score", ro)


def gather_scores(trainer: "Trainer", refs: list, role: str = "reward") -> tuple[torch.Tensor, dict[str, float]]:
    """``(scores [B], metrics)``: ``reward/<component>`` and ``reward/fail/<reason>`` (see rewards.details)."""
    from rlcustom.rewards.details import detail_metrics

    g = trainer.groups[role]
    if not hasattr(g.actors[0], "score_details"):  # plain scores, e.g. [B][n_scorers] of L3M's constraints
        return torch.tensor(g.gather(refs, role), dtype=torch.float32), {}
    parts = g.get(refs, "reward")
    scores = torch.tensor([s for p in parts for s in p["scores"]], dtype=torch.float32)
    return scores, detail_metrics(parts)


def score_rollouts(trainer: "Trainer", ro, role: str = "reward") -> tuple[torch.Tensor, dict[str, float]]:
    """Multi-turn episodes (``ro.episodes``, ``rollout.env``) score by their returns :math:`R = \\sum_t r_t`
    (``rollout.reward: sum`` adds the reward role's score of the whole episode), with the ``env/*`` metrics."""
    if not getattr(ro, "episodes", None):
        return gather_scores(trainer, scatter_scores(trainer, ro, role), role)
    from rlcustom.envs.metrics import episode_metrics

    scores = torch.tensor([e.get("return", 0.0) if e else 0.0 for e in ro.episodes], dtype=torch.float32)
    metrics = episode_metrics(ro)
    if trainer.cfg.rollout.reward == "sum":
        extra, m = gather_scores(trainer, scatter_scores(trainer, ro, role), role)
        scores, metrics = scores + extra, metrics | m
    return scores, metrics

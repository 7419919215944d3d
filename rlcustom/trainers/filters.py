"""Batch filters that run between scoring and the update. Dynamic sampling (DAPO) lives here as a
standalone function, so any trainer's step (or a pipeline's ``filter`` stage) can call it.

DAPO's dynamic sampling (Yu et al. 2025, Sec. 3.2, Eq. 11: ``0 < |{o_i : is_equivalent(a, o_i)}| < G``):
a group whose samples all scored the same has zero group-relative advantage and contributes no
gradient, so it is dropped and more prompts are generated until the batch holds ``target`` groups
with signal, at most ``max_rounds`` extra generations; if still short, the batch is topped up with
dropped groups (zero advantage), so its size stays constant.
"""
from __future__ import annotations

import random
from typing import Callable

import torch

__all__ = ["uniform_groups", "dynamic_sampling", "extra_prompts"]


def uniform_groups(scores: torch.Tensor, group_ids: list[int], atol: float = 0.0) -> dict[int, bool]:
    """``{group: True if all its scores are equal (within atol)}``, in first-seen order."""
    rows: dict[int, list[float]] = {}
    for g, s in zip(group_ids, scores.tolist()):
        rows.setdefault(g, []).append(s)
    return {g: (max(v) - min(v)) <= atol for g, v in rows.items()}


def dynamic_sampling(first, first_scores: torch.Tensor, draw: Callable[[int], tuple], target: int,
                     max_rounds: int = 2, atol: float = 0.0):
    """Keep ``target`` groups whose scores differ, drawing more with ``draw(round)`` (round = 1, 2, ...).

    Args:
        first: the step's :class:`~rlcustom.engines.base.Rollouts` (``prompt_index`` marks groups).
        first_scores: ``[B]`` their scores.
        draw: ``draw(round) -> (Rollouts, scores [B'])``: fresh prompts' samples, scored.
        target: groups the batch must have (the step's prompts per step).
        max_rounds: extra generations allowed.

    Returns:
        ``(rollouts, scores, stats)``: exactly ``target`` groups (informative ones first, in order of
        arrival, then dropped ones to keep the size); stats ``rollout/dropped_groups`` (all-equal groups
        seen), ``rollout/extra_rounds`` and ``rollout/padded_groups`` (dropped groups used to fill).
    """
    from rlcustom.engines.base import Rollouts

    parts, score_parts = [first], [first_scores]
    rounds = 0
    while True:
        ro = Rollouts.concat(parts)
        scores = torch.cat(score_parts)
        flags = uniform_groups(scores, ro.prompt_index, atol)
        good = [g for g, uniform in flags.items() if not uniform]
        if len(good) >= target or rounds >= max_rounds:
            break
        rounds += 1
        more, more_scores = draw(rounds)
        parts.append(more)
        score_parts.append(more_scores)
    bad = [g for g, uniform in flags.items() if uniform]
    keep = good[:target]
    padded = bad[: target - len(keep)]
    keep_set = set(keep + padded)
    idx = [i for i, g in enumerate(ro.prompt_index) if g in keep_set]
    stats = {"rollout/dropped_groups": float(len(bad)), "rollout/extra_rounds": float(rounds),
             "rollout/padded_groups": float(len(padded)), "rollout/kept_groups": float(len(keep))}
    return ro.select(idx), scores[idx], stats


def extra_prompts(trainer, n: int, round_: int):
    """``n`` prompts for an extra generation (seeded by seed, step and round; resume gives the same)."""
    from rlcustom.data.fields import PromptBatch

    ps, order = trainer.sampler.prompts, trainer.sampler.order
    rng = random.Random(hash((trainer.cfg.seed, trainer.step_idx, round_)) & 0xFFFFFFFF)
    rows = [order[rng.randrange(len(order))] for _ in range(n)]
    return PromptBatch([ps.ids[r] for r in rows], [ps.fields[r] for r in rows] if ps.fields else None)


def resample_step(trainer, ro, params, plan, n_prompts: int):
    """A step's rollouts after dynamic sampling: scored by the reward role (with the plan's overlong
    penalty), all-equal groups dropped and refilled from ``plan.max_resample_rounds`` extra generations.
    Returns ``(rollouts, scores, metrics)``; ``rollout/raw_reward_mean`` is the unfiltered first round's mean."""
    from rlcustom.trainers.objective_plan import shape_scores
    from rlcustom.trainers.scoring import score_rollouts

    max_new = trainer.cfg.sampling.max_new_tokens
    metrics: list[dict[str, float]] = []

    def score(r):
        s, m = score_rollouts(trainer, r)
        metrics.append(m)
        return shape_scores(plan, s, r, max_new)

    def draw(k: int):
        more = trainer.rollouts(extra_prompts(trainer, n_prompts, k),
                                params.with_(seed=(params.seed or 0) + 1000003 * k))
        return more, score(more)

    first = score(ro)
    out, scores, stats = dynamic_sampling(ro, first, draw, n_prompts, plan.max_resample_rounds)
    return out, scores, metrics[0] | stats | {"rollout/raw_reward_mean": float(first.mean())}

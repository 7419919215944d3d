"""The rollout role's multi-turn episodes: :meth:`EpisodeMixin.episodes` runs
:func:`rlcustom.envs.rollout.env_episodes` on this replica's engine, one guarded environment per
episode (:class:`rlcustom.envs.guard.GuardedEnv`)."""
from __future__ import annotations

from typing import Any, Sequence

from rlcustom.engines.base import Rollouts, SamplingParams

__all__ = ["EpisodeMixin"]


class EpisodeMixin:
    """For :class:`~rlcustom.actors.rollout.RolloutActor`: ``self.engine`` and ``self.generate``."""

    engine: Any
    rank: int

    def episodes(self, prompts: Sequence[Sequence[int]], fields: Sequence[dict] | None, params: SamplingParams,
                 rollout_cfg: Any) -> Rollouts:
        """``params.n`` episodes per prompt with the environment ``rollout_cfg.env`` (a
        :class:`~rlcustom.config.rollout.RolloutConfig`); ``fields[i]`` is prompt ``i``'s row."""
        from rlcustom.envs.rollout import env_episodes

        return env_episodes(self.generate, self.engine.tokenizer, self.engine.eos_ids,  # type: ignore[attr-defined]
                            prompts, fields, params, rollout_cfg, who=f"rollout {getattr(self, 'rank', 0)}")

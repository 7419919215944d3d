"""The rollout role's multi-turn episodes: :meth:`EpisodeMixin.episodes` runs
:func:`rlcustom.engines.multiturn.run_episodes` on this replica's engine, one guarded environment per
episode (:class:`rlcustom.envs.guard.GuardedEnv`)."""
from __future__ import annotations

import sys
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
        from rlcustom.engines.markup import TurnMarkup
        from rlcustom.engines.multiturn import EpisodeBudget, run_episodes
        from rlcustom.envs.base import resolve_env
        from rlcustom.envs.guard import GuardedEnv, Outcome

        rc, tok = rollout_cfg, self.engine.tokenizer
        factory = resolve_env(rc.env)
        envs = []
        for _ in range(len(prompts) * params.n):
            g = GuardedEnv(None, rc.env_timeout_s, rc.max_observation_chars)
            try:
                g.env = factory(**dict(rc.env_kwargs))
            except Exception as e:  # noqa: BLE001 - a constructor that raises costs its episode
                g.dead = Outcome(failure="env_error", message=f"constructor: {type(e).__name__}: {e}"[:500])
            envs.append(g)
        logged = [0]

        def on_failure(j: int, ep: Any) -> None:
            if logged[0] < rc.log_failures:
                logged[0] += 1
                print(f"[rlcustom] rollout {getattr(self, 'rank', 0)}: episode {j} failed after {ep.turns} turn(s): "
                      f"{ep.failure}: {ep.message}", file=sys.stderr, flush=True)

        budget = EpisodeBudget(rc.max_turns, rc.max_tokens, rc.wall_s, rc.failure_reward)
        rows = list(fields) if fields else [{} for _ in prompts]
        return run_episodes(self.generate, tok,  # type: ignore[attr-defined]
                            prompts, rows, envs, params, budget,
                            TurnMarkup(tok, rc.observation_role), self.engine.eos_ids, on_failure)

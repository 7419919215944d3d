"""Episodes of the ``rollout:`` section on one engine: guarded environments, the budget, the turn markup.

:func:`env_episodes` is what the rollout role runs each step (``actors/episodes.py``) and what held-out
evaluation runs greedily (:func:`rlcustom.eval.heldout.heldout_accuracy` with ``rollout.env`` set): one
fresh environment per episode, built from ``rollout.env`` / ``env_kwargs`` and wrapped in
:class:`~rlcustom.envs.guard.GuardedEnv` (a constructor that raises costs its episode, ``env_error``),
then :func:`rlcustom.engines.multiturn.run_episodes`.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from rlcustom.engines.base import Rollouts, SamplingParams

__all__ = ["env_episodes", "guarded_envs"]


def guarded_envs(rollout_cfg: Any, count: int) -> list[Any]:
    """``count`` fresh environments of ``rollout_cfg.env``, each behind the guard's bounds."""
    from rlcustom.envs.base import resolve_env
    from rlcustom.envs.guard import GuardedEnv, Outcome

    rc = rollout_cfg
    factory = resolve_env(rc.env)
    envs = []
    for _ in range(count):
        g = GuardedEnv(None, rc.env_timeout_s, rc.max_observation_chars)
        try:
            g.env = factory(**dict(rc.env_kwargs))
        except Exception as e:  # noqa: BLE001 - a constructor that raises costs its episode
            g.dead = Outcome(failure="env_error", message=f"constructor: {type(e).__name__}: {e}"[:500])
        envs.append(g)
    return envs


def env_episodes(generate: Callable[[list[list[int]], SamplingParams], Rollouts], tokenizer: Any,
                 eos_ids: Sequence[int], prompts: Sequence[Sequence[int]], fields: Sequence[dict] | None,
                 params: SamplingParams, rollout_cfg: Any, who: str = "rollout") -> Rollouts:
    """``params.n`` episodes per prompt (``fields[i]``: prompt ``i``'s row); the first
    ``rollout_cfg.log_failures`` failed episodes are logged to stderr, prefixed ``who``."""
    from rlcustom.engines.markup import TurnMarkup
    from rlcustom.engines.multiturn import EpisodeBudget, run_episodes

    rc = rollout_cfg
    envs = guarded_envs(rc, len(prompts) * params.n)
    logged = [0]

    def on_failure(j: int, ep: Any) -> None:
        if logged[0] < rc.log_failures:
            logged[0] += 1
            print(f"[rlcustom] {who}: episode {j} failed after {ep.turns} turn(s): {ep.failure}: {ep.message}",
                  file=sys.stderr, flush=True)

    budget = EpisodeBudget(rc.max_turns, rc.max_tokens, rc.wall_s, rc.failure_reward)
    rows = list(fields) if fields else [{} for _ in prompts]
    return run_episodes(generate, tokenizer, prompts, rows, envs, params, budget,
                        TurnMarkup(tokenizer, rc.observation_role), eos_ids, on_failure)

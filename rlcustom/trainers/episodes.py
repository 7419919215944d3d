"""Multi-turn episodes in a trainer: the preflight check of ``rollout:``.

With ``rollout.env`` set, :meth:`RoleHost.rollouts <rlcustom.runtime.host.RoleHost.rollouts>` returns
episodes (token ids with a loss mask, one record per sample) and
:func:`~rlcustom.trainers.scoring.score_rollouts` makes each episode's return its sequence score.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rlcustom.errors import ConfigError

if TYPE_CHECKING:
    from rlcustom.trainers.base import Trainer

__all__ = ["check_rollout_env"]


def check_rollout_env(trainer: "Trainer") -> None:
    """Before Ray starts: the trainer runs episodes, the environment resolves and builds with
    ``rollout.env_kwargs``, and the tokenizer's chat template can append observation turns."""
    rc = trainer.cfg.rollout
    if not getattr(trainer, "env_rollouts", False):
        raise ConfigError(f"rollout.env: trainer '{trainer.name}' does not run multi-turn episodes "
                          "(trainer: pg does; unset rollout.env)")
    a = trainer.cfg.algo
    if getattr(a, "objective", None) is not None and hasattr(a, "objective_kwargs"):
        from rlcustom.trainers.objective_plan import plan_objective

        plan = plan_objective(a.objective, a.objective_kwargs, clip_eps=getattr(a, "clip_eps", 0.2), agg="token",
                              max_new_tokens=trainer.cfg.sampling.max_new_tokens)
        if plan.overlong_buffer:  # DAPO's penalty measures one response against sampling.max_new_tokens
            raise ConfigError(f"rollout.env: algo.objective={a.objective} adds an overlong penalty, which is for single "
                              "responses, not episodes; set algo.objective_kwargs.overlong_buffer=0")
    from rlcustom.envs.base import resolve_env

    factory = resolve_env(rc.env)
    try:
        factory(**dict(rc.env_kwargs))
    except Exception as e:  # noqa: BLE001 - any constructor failure is the config's
        raise ConfigError(f"rollout.env_kwargs: {rc.env} cannot be built with {dict(rc.env_kwargs)}: "
                          f"{type(e).__name__}: {e}") from None
    tok = getattr(trainer.sampler, "tokenizer", None)
    if tok is not None:
        from rlcustom.engines.markup import TurnMarkup

        try:
            TurnMarkup(tok, rc.observation_role).text("x", None)
        except Exception as e:  # noqa: BLE001 - a template error (e.g. an unknown role) is the config's
            raise ConfigError(f"rollout.observation_role={rc.observation_role!r}: the chat template cannot render "
                              f"an observation turn: {type(e).__name__}: {e}") from None

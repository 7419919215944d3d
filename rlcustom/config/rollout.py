"""The ``rollout:`` section: multi-turn, environment-driven rollouts (off unless ``env`` is set)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rlcustom.config.validation import non_negative, positive

__all__ = ["RolloutConfig"]


@dataclass(frozen=True)
class RolloutConfig:
    """With ``env`` set, each sample is an episode: model turns (``sampling.max_new_tokens`` each) alternate
    with the environment's observations (see docs/environments.md)."""

    env: str | None = None  # environment: calculator | python | tools | 'module.path:Class'; null: one answer per prompt
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the environment's constructor
    max_turns: int = field(default=4, metadata=positive)  # model turns per episode
    max_tokens: int = field(default=512, metadata=positive)  # response tokens per episode (model + observation)
    wall_s: float = field(default=300.0, metadata=positive)  # seconds for one replica's episodes of a step
    env_timeout_s: float = field(default=10.0, metadata=positive)  # longest wait for one reset/step call
    max_observation_chars: int = field(default=4096, metadata=positive)  # a longer observation fails the episode
    observation_role: str = "user"  # chat role of observation turns (e.g. tool, if the template knows it)
    reward: Literal["env", "sum"] = "env"  # episode score: the environment's return, or it plus the reward role's
    failure_reward: float = 0.0  # score of an episode whose environment failed (its tokens are not trained)
    log_failures: int = field(default=3, metadata=non_negative)  # failed episodes logged per step (all counted)

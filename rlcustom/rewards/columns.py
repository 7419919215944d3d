"""The data-vs-reward check run before Ray starts: a reward that requires a column the data lacks."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from rlcustom.rewards.core import RewardSpecError, resolve_reward, reward_name
from rlcustom.rewards.signature import required_fields

__all__ = ["check_reward_columns", "check_sampler_columns"]


def check_reward_columns(spec: Any, kwargs: Mapping[str, Any], columns: Iterable[str], where: str) -> None:
    """Raise :class:`~rlcustom.rewards.RewardSpecError` (one line) when reward ``spec`` requires a column
    that not every record of ``where`` has. Model and HTTP rewards read no columns."""
    if isinstance(spec, str) and spec in ("model", "loglik", "http"):
        return
    fn = resolve_reward(spec)
    cols = set(columns)
    for name in required_fields(fn, kwargs):
        if name not in cols:
            have = ", ".join(sorted(cols)) or "none"
            raise RewardSpecError(f"reward {reward_name(spec)!r} needs column {name!r}, which not every record of "
                                  f"{where} has (columns: {have}); add it to the data or set reward.kwargs.{name}")


def check_sampler_columns(cfg: Any, sampler: Any) -> None:
    """:func:`check_reward_columns` for a run's reward and the prompt set its sampler holds."""
    from rlcustom.data.fields import common_columns

    check_reward_columns(cfg.reward.spec, cfg.reward.kwargs, common_columns(sampler.prompts.fields),
                         f"data.prompts={cfg.data.prompts}")

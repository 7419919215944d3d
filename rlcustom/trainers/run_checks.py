"""The checks a trainer runs before Ray starts: model path, tokenizer, prompt data (vs the reward's columns),
the rollout environment and the checkpoint ``resume`` would load -- a typo costs one line, not a cluster start-up."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlcustom.trainers.base import Trainer


def check_run(trainer: "Trainer") -> None:
    """Sets ``trainer.sampler`` (the prompt set for the run) for trainers with a rollout role."""
    from rlcustom.data.sampler import PromptSampler
    from rlcustom.rewards.columns import check_sampler_columns
    from rlcustom.trainers.checkpoint_identity import check_resume

    cfg = trainer.cfg
    if "rollout" in trainer.roles_used:
        trainer.sampler = PromptSampler.from_config(cfg)
        if "reward" in trainer.roles_used:
            check_sampler_columns(cfg, trainer.sampler)
    if getattr(cfg, "rollout", None) is not None and cfg.rollout.env:
        from rlcustom.trainers.episodes import check_rollout_env

        check_rollout_env(trainer)
    check_resume(cfg, tuple(trainer.stateful_roles), tuple(trainer.roles_used))  # files, identity

"""Trainers: one driver per algorithm, registered by name (``trainer:`` in a config).

RL trainers are :class:`~rlcustom.trainers.pipeline.PipelineTrainer` subclasses (stages ``generate ->
score -> filter -> advantages -> update -> sync``); the loop itself is :class:`~rlcustom.trainers.base.Trainer`.
"""
from __future__ import annotations

from typing import Any

from rlcustom.registry import TRAINERS
from rlcustom.trainers.base import Trainer, register_trainer


def run_trainer(cfg) -> dict[str, Any]:
    """Train with the registered trainer ``cfg.trainer``."""
    from rlcustom.preflight import preflight

    preflight(cfg, "train")  # no Ray, no weights; a no-op when the CLI already checked this config
    return TRAINERS.get(cfg.trainer)(cfg).fit()


import rlcustom.builtins  # noqa: E402,F401  (registers every built-in; an import error there is loud)

__all__ = ["Trainer", "register_trainer", "run_trainer"]

"""Trainers: one driver per algorithm, registered by name (``trainer:`` in a config)."""
from rlcustom.trainers.base import Trainer, register_trainer, run_trainer
from rlcustom.trainers import best_of_n, l3m, offline, pg, ppo, qadapter, vas  # noqa: F401  (register the built-in trainers)

__all__ = ["Trainer", "register_trainer", "run_trainer"]

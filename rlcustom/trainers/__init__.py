"""Trainers: one driver per algorithm, registered by name (``trainer:`` in a config)."""
from rlcustom.trainers.base import Trainer, register_trainer, run_trainer
from rlcustom.trainers import pg, ppo  # noqa: F401  (register "pg", "ppo")

__all__ = ["Trainer", "register_trainer", "run_trainer"]

"""The optimizer (AdamW, or DeepSpeed's CPU Adam when its state is offloaded) and its LR schedule.

The schedule is ``transformers.get_scheduler``: ``optim.schedule`` ``constant``
(``constant_with_warmup``), ``linear`` or ``cosine``, with ``optim.warmup_steps``
of linear warmup from 0 and decay over ``optim.total_steps`` applied updates
(transformers' convention: the first warmup update uses LR 0; a cosine schedule
past ``total_steps`` rises again, so set ``total_steps`` >= the run's updates).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the config dataclasses, for annotations only (training does not import config)
    from rlcustom.config import OptimConfig


SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def param_groups(trainable: list[tuple[str, torch.nn.Parameter]], weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; biases and norms (ndim < 2) get none."""
    groups = [
        {"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(trainable: list[tuple[str, torch.nn.Parameter]], optim: OptimConfig, *,
                    offload_optimizer: bool) -> torch.optim.Optimizer:
    groups = param_groups(trainable, optim.weight_decay)
    betas = tuple(optim.betas[:2])
    if offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=optim.lr, betas=betas, eps=optim.eps, weight_decay=optim.weight_decay,
                                adamw_mode=True)
    return torch.optim.AdamW(groups, lr=optim.lr, betas=betas, eps=optim.eps, weight_decay=optim.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig):
    """``transformers.get_scheduler`` for ``optim.schedule`` (see the module docstring)."""
    from transformers import get_scheduler

    if optim.schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule: unknown LR schedule {optim.schedule!r} (expected constant, linear or "
                         "cosine)")
    return get_scheduler(SCHEDULES[optim.schedule], optimizer, num_warmup_steps=optim.warmup_steps,
                         num_training_steps=optim.total_steps)

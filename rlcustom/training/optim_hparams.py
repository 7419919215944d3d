"""The config's optimizer settings win over those restored from a checkpoint.

``optimizer.load_state_dict`` restores each param group's ``lr``/``betas``/``eps``/``weight_decay`` and
``LambdaLR.load_state_dict`` its ``base_lrs``: a resume would silently keep the old learning rate. Resume
refuses a changed ``optim.*`` unless ``resume_force`` (rlcustom/trainers/checkpoint_identity.py); after a
forced resume the new values apply from the next update, on the restored schedule position:
``lr_t = optim.lr * factor(t)`` with ``t`` the scheduler's restored step.
"""
from __future__ import annotations

from typing import Any


def apply_optim_hparams(optimizer: Any, scheduler: Any, optim_cfg: Any, lr: float | None = None,
                        weight_decay: bool = True) -> None:
    """Set ``lr`` (default ``optim_cfg.lr``), betas, eps and the decayed groups' weight decay on every param
    group, and the scheduler's ``base_lrs``; group 0 is the decayed one, as the learners build them."""
    lr = float(optim_cfg.lr if lr is None else lr)
    lambdas = getattr(scheduler, "lr_lambdas", None) or [lambda _s: 1.0] * len(optimizer.param_groups)
    step = getattr(scheduler, "last_epoch", 0)
    for i, (g, fn) in enumerate(zip(optimizer.param_groups, lambdas)):
        g["initial_lr"] = lr
        g["lr"] = lr * fn(step)
        if "betas" in g:
            g["betas"] = tuple(optim_cfg.betas[:2])
        if "eps" in g:
            g["eps"] = optim_cfg.eps
        if weight_decay and i == 0 and "weight_decay" in g and g["weight_decay"] != 0:
            g["weight_decay"] = optim_cfg.weight_decay
    if scheduler is not None:
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]

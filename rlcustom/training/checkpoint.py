"""Checkpoint I/O of a training engine: per-rank optimizer/scheduler/counter state and RNG states.

``path/optim_rank{r}.pt``: this rank's optimizer state (DeepSpeed's ZeRO state dict with
its non-tensor objects turned into plain data, :mod:`rlcustom.training.serialize`), LR
scheduler state, loss-scaler attributes and counters. ``path/rng_rank{r}.pt``: torch
(CPU and CUDA), Python and NumPy RNG states. Every ``.pt`` file loads with
``torch.load(..., weights_only=True)``. ZeRO optimizer state is partitioned, so a
checkpoint is loaded with the same world size and ZeRO stage that wrote it. The weights
are written by the caller (the learner: ``model.safetensors``; the critic: a value-model
directory), since their format depends on the model.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rlcustom.training.serialize import plain_state, rng_state, set_rng_state
from rlcustom.training.optim_hparams import apply_optim_hparams

if TYPE_CHECKING:
    from rlcustom.training.engine import TrainingEngine


def optim_file(rank: int) -> str:
    return f"optim_rank{rank}.pt"


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def save_state(te: "TrainingEngine", path: str | Path) -> list[str]:
    """Write this rank's optimizer and RNG files into ``path``; returns their names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    scaler = getattr(te.optimizer, "loss_scaler", None)
    blob = {"format": 1, "world_size": te.world_size, "zero_stage": te.zero_stage,
            "optimizer": plain_state(te.optimizer.state_dict()), "scheduler": plain_state(te.scheduler.state_dict()),
            "loss_scaler": plain_state(dict(vars(scaler))) if scaler is not None else None,
            "counters": te.counters()}
    torch.save(blob, path / optim_file(te.rank))
    torch.save(rng_state(), path / rng_file(te.rank))
    return [optim_file(te.rank), rng_file(te.rank)]


def check_layout(te: "TrainingEngine", path: str | Path) -> dict:
    """This rank's optimizer file, after checking it was written with this world size and ZeRO stage."""
    path = Path(path)
    blob = torch.load(path / optim_file(te.rank), map_location="cpu", weights_only=True)
    if blob["world_size"] != te.world_size or blob["zero_stage"] != te.zero_stage:
        raise ValueError(f"{path}: written by {blob['world_size']} rank(s) with ZeRO-{blob['zero_stage']}; "
                         f"this {te.what} has {te.world_size} rank(s) with ZeRO-{te.zero_stage} "
                         "(ZeRO optimizer state is partitioned per rank)")
    return blob


def load_state(te: "TrainingEngine", path: str | Path, blob: dict | None = None) -> None:
    """Restore what :func:`save_state` wrote (call after the weights are back in the module)."""
    from deepspeed.runtime.base_optimizer import ZeROOptimizer

    path = Path(path)
    blob = blob if blob is not None else check_layout(te, path)
    live = te.optimizer.state_dict()
    live.update(blob["optimizer"])  # objects left out at save time come from the live optimizer
    if isinstance(te.optimizer, ZeROOptimizer):  # ZeRO 1-3 and BF16_Optimizer: one state dict per rank
        sds: list = [None] * te.world_size
        sds[te.rank] = live
        te.optimizer.load_state_dict(sds, load_optimizer_states=True, load_from_fp32_weights=True)
    else:  # torch optimizer (ZeRO-0 fp32) or FP16_Optimizer
        te.optimizer.load_state_dict(live)
    scaler = getattr(te.optimizer, "loss_scaler", None)
    if scaler is not None and blob.get("loss_scaler"):
        for k, v in blob["loss_scaler"].items():
            if hasattr(scaler, k) and not callable(getattr(scaler, k)):
                setattr(scaler, k, v)
    te.scheduler.load_state_dict(blob["scheduler"])
    # the config's optim.* win over the restored ones (a forced resume with a new lr applies it)
    apply_optim_hparams(te.base_optimizer, te.scheduler, te.optim_cfg)
    te.set_counters(blob["counters"])
    set_rng_state(torch.load(path / rng_file(te.rank), map_location="cpu", weights_only=True))

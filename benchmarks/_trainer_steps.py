"""Shared by the weight-sync and runtime-overhead benchmarks (not a benchmark itself: leading underscore).

Builds a trainer's roles through the real scheduler (Ray actors in placement bundles), without
``fit()``'s tracker, checkpoints and export, so a benchmark can time ``step()`` and
``sync_weights()`` on their own.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def threads() -> int:
    """Torch threads per role: what the CPU slot gave this process (``OMP_NUM_THREADS``), else 1."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def demo_config(overrides: list[str] = (), path: str | None = None):
    """configs/examples/ppo_length.yaml (the demo's PPO run) with overrides; no W&B, no checkpoints, no resume."""
    from rlcustom.config import load_config

    path = path or str(Path(__file__).resolve().parent.parent / "configs" / "examples" / "ppo_length.yaml")
    t = threads()
    base = ["resume=never", "save_every=0", "tracking.mode=disabled",
            *(f"roles.{r}.num_threads={t}" for r in ("rollout", "learner", "reference", "reward"))]
    return load_config(path, base + list(overrides))


def start(trainer) -> float:
    """Place and build the trainer's roles on Ray; returns the seconds it took."""
    t0 = time.perf_counter()
    trainer.preflight()
    trainer.place()
    trainer.build()
    trainer.wait_roles_ready()
    return time.perf_counter() - t0


def run_step(trainer) -> tuple[float, dict]:
    """One ``step()`` as ``fit()`` runs it (wall seconds, stats); advances ``step_idx``."""
    trainer._trained_this_step = False
    t0 = time.perf_counter()
    stats = trainer.step()
    wall = time.perf_counter() - t0
    trainer.step_idx += 1
    return wall, stats


def param_count(model_path: str) -> int:
    """Parameters of a model directory (tied weights once), from its config on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rlcustom.models.loading import resolve_model_path

    cfg = AutoConfig.from_pretrained(resolve_model_path(model_path))
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in m.parameters())

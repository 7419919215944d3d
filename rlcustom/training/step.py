"""One optimizer step: a per-step clipping override, and the non-finite policy (skip, never apply).

A step is skipped, with parameters, optimizer state and LR schedule untouched, when
any rank's loss or the global gradient norm is NaN/Inf. DeepSpeed's ZeRO/bf16/fp16
optimizers skip such an update themselves (their overflow check); under ZeRO-0 fp32
(a plain torch optimizer) the reduced gradients are checked here and discarded.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import torch

if TYPE_CHECKING:
    from rlcustom.training.engine import TrainingEngine


def ds_skips_nonfinite(optimizer) -> bool:
    """True when DeepSpeed's optimizer wrapper checks the gradients and skips bad steps itself."""
    return hasattr(optimizer, "overflow")


def local_grad_norm(te: "TrainingEngine") -> float:
    """Global grad norm under ZeRO-0 (the gradients in ``p.grad`` are already all-reduced)."""
    sq = torch.zeros((), dtype=torch.float64, device=te.device)
    for _, p in te.trainable:
        if p.grad is not None:
            sq += p.grad.detach().double().pow(2).sum()
    return float(sq.sqrt())


@contextmanager
def grad_clipping(te: "TrainingEngine", max_grad_norm: float | None) -> Iterator[None]:
    """Clip this step's global gradient norm to ``max_grad_norm`` instead of ``optim.max_grad_norm``
    (``0`` disables clipping; ``None`` keeps the configured value).

    DeepSpeed clips inside ``engine.step()``: ZeRO-0 fp32 reads the engine config
    (``clip_fp32_gradients``), the ZeRO 1-3 / bf16 / fp16 optimizer wrappers their own
    ``clip_grad`` (on the partitioned, reduced gradients). Both are set for the step and
    restored after it, so clipping stays DeepSpeed's (correct under every ZeRO stage).
    """
    if max_grad_norm is None:
        yield
        return
    v = float(max_grad_norm)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"max_grad_norm must be a finite number >= 0, got {max_grad_norm}")
    cfg, opt = te.engine._config, te.optimizer
    old_cfg, old_opt = cfg.gradient_clipping, getattr(opt, "clip_grad", None)
    cfg.gradient_clipping = v
    if old_opt is not None:
        opt.clip_grad = v
    try:
        yield
    finally:
        cfg.gradient_clipping = old_cfg
        if old_opt is not None:
            opt.clip_grad = old_opt


def apply_or_skip(te: "TrainingEngine") -> tuple[bool, float]:
    """Apply the accumulated gradients unless they are non-finite; returns (skipped, grad norm before clipping)."""
    if ds_skips_nonfinite(te.optimizer):
        te.engine.step()
        gn = te.engine.get_global_grad_norm()
        return bool(te.optimizer.overflow), float(gn) if gn is not None else float("nan")
    grad_norm = local_grad_norm(te)
    skipped = not math.isfinite(grad_norm)
    if skipped:
        te.engine.zero_grad()
    else:
        te.engine.step()
    return skipped, grad_norm


def discard_grads(te: "TrainingEngine", first_mb: dict, objective: Callable) -> None:
    """Drop the accumulated gradients without touching parameters or optimizer state."""
    if not ds_skips_nonfinite(te.optimizer):
        te.engine.zero_grad()
        return
    # ZeRO keeps reduced gradients in its own partitions; its overflow path clears them
    # (and leaves the optimizer alone), so feed it a poisoned gradient and step.
    e = te.engine
    counters = (e.global_steps, e.skipped_steps, e.global_samples)
    ds_log = logging.getLogger("DeepSpeed")
    level = ds_log.level
    ds_log.setLevel(logging.ERROR)  # not a real overflow: keep its "OVERFLOW! Skipping step" quiet
    try:
        e.set_gradient_accumulation_boundary(True)
        loss, _ = objective(e, first_mb)
        e.backward(loss * float("nan"), scale_wrt_gas=False)
        e.step()
    finally:
        ds_log.setLevel(level)
    if not te.optimizer.overflow:
        raise RuntimeError("DeepSpeed did not skip a step with NaN gradients; gradients were not discarded")
    e.global_steps, e.skipped_steps, e.global_samples = counters
